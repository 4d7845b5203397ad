"""The naive peer: everything in, everything recomputed, every tab rewritten."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC
from typing import Any

from bench.reports.child import REPORTS, Job, new_spreadsheet, prepare_child, task_figures
from bench.reports.measure import RssSampler, Stages, cpu_seconds, rows_digest, stand_in_calls
from bench.reports.ours import upsert_twice
from devstack import clients


def naive(job: Job) -> dict[str, Any]:
    """Everything in, everything recomputed, every tab rewritten."""
    sampler, client = prepare_child(sheets=True)
    import pandas as pd
    import pymongo
    from bson.codec_options import CodecOptions

    from leadflow.config import DEFAULT_DATABASE, INTERACTIONS, USERS
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.sheets import frame_rows
    from leadflow.reports.sheets_api import column_letter, quote_tab
    from leadflow.reports.transform import consolidated_report, session_report

    # The same database leadflow.mongo.get_database hands out (tz-aware UTC), from the URI.
    codecs = CodecOptions(tz_aware=True, tzinfo=UTC)
    db = pymongo.MongoClient(job.mongo_uri).get_database(DEFAULT_DATABASE, codec_options=codecs)
    db[INTERACTIONS].find_one({}, {"_id": 1})
    baseline = RssSampler.current()
    stages = Stages(sampler)
    since = len(clients.calls(job.sheets_url))

    mongo_cpu = cpu_seconds(job.mongo_pid)
    with stages.run("load collections") as stage:
        started = time.perf_counter()
        interaction_docs = list(db[INTERACTIONS].find())
        user_docs = list(db[USERS].find())
        listed_s = time.perf_counter() - started
        interactions = pd.DataFrame(interaction_docs)
        users = pd.DataFrame(user_docs)
        del interaction_docs, user_docs
    mongo_cpu = cpu_seconds(job.mongo_pid) - mongo_cpu
    stage.note = f"{len(interactions):,} interactions, {len(users):,} users; list(find()) {listed_s:.2f} s"

    with stages.run("prepare frames") as stage:
        interactions = interactions.reindex(columns=["_id", "user_id", "session_id", "timestamp", "intent"])
        interactions["_id"] = interactions["_id"].astype(str)
        interactions["user_id"] = interactions["user_id"].map(lambda v: None if v is None or v != v else str(v))
        visits = users["site_visit"] if "site_visit" in users else pd.Series([None] * len(users))
        users = pd.DataFrame(
            {
                "user_id": users["_id"].astype(str),
                "name": users.get("name"),
                "mobile": users.get("mobile"),
                "preferred_configuration": users.get("preferred_configuration"),
                "ranking": users.get("ranking"),
                "site_visit_status": visits.map(lambda v: v.get("status") if isinstance(v, dict) else None),
                "site_visit_scheduled_at": pd.to_datetime(
                    visits.map(lambda v: v.get("scheduled_at") if isinstance(v, dict) else None), utc=True
                ),
            }
        )
        with_session = interactions["session_id"].map(lambda v: isinstance(v, str) and v != "")
        all_sessions = interactions.loc[with_session, "session_id"].unique().tolist()
        all_users = interactions.loc[with_session, "user_id"].dropna().unique().tolist()
    stage.note = "ids to text, site_visit flattened"

    with stages.run("transform sessions") as stage:
        read_at = pd.Timestamp.now(tz="UTC")  # the Updated column ours writes too
        sessions, _ = session_report(interactions, users, all_sessions)
        sessions["Updated"] = read_at
    stage.note = f"{len(sessions):,} rows (every session)"
    with stages.run("transform consolidated") as stage:
        consolidated, _ = consolidated_report(interactions, users, all_users)
        consolidated["Updated"] = read_at
    stage.note = f"{len(consolidated):,} rows (every user)"
    reports = {"sessions": sessions, "consolidated": consolidated}
    del interactions, users

    loads: dict[str, dict[str, Any]] = {}
    for kind in REPORTS:
        spec, frame = SPECS[kind], reports[kind]
        tabs = spec.tab_of(frame)
        spreadsheet_id = new_spreadsheet(client, f"{spec.title} (naive)", sorted(set(tabs)), len(spec.columns))
        _, since = stand_in_calls(job.sheets_url, since, 2)  # create + its tabs
        before, http_before = Counter(client.calls), client.http_seconds
        values = client.sheets.spreadsheets().values()
        with stages.run(f"load {kind} (full rewrite)") as stage:
            for tab in sorted(set(tabs)):
                rows = frame_rows(frame[tabs == tab], spec)
                client.execute(values.clear(spreadsheetId=spreadsheet_id, range=quote_tab(tab), body={}), "writes")
                last = f"{column_letter(len(spec.columns) - 1)}{len(rows) + 1}"
                client.execute(
                    values.update(
                        spreadsheetId=spreadsheet_id,
                        range=f"{quote_tab(tab)}!A1:{last}",
                        valueInputOption="RAW",
                        body={"values": [spec.columns, *rows]},
                    ),
                    "writes",
                )
        used = client.calls - before
        checked, since = stand_in_calls(job.sheets_url, since, used["reads"] + used["writes"])
        loads[kind] = {
            "rows": len(frame),
            "seconds": stage.seconds,
            "http_seconds": client.http_seconds - http_before,
            "reads": used["reads"],
            "writes": used["writes"],
            "request_bytes": used["request_bytes"],
            "stand_in": checked,
        }
        stage.note = (
            f"{len(frame):,} rows; {used['writes']} writes, {used['request_bytes'] / 1e6:.2f} MB; "
            f"HTTP wait {loads[kind]['http_seconds']:.2f} s"
        )
    figures = task_figures("naive", stages, baseline)
    agree = {kind: rows_digest(reports[kind], kind, job.ours_keys.get(kind, [])) for kind in REPORTS}

    # Ours' upsert at the full-collection row count (a large backfill): not in the naive figures.
    probe: dict[str, list[dict[str, Any]]] = {}
    if job.scale_probe:
        probe_stages = Stages(sampler)
        for kind in REPORTS:
            probe[kind], since = upsert_twice(client, job, kind, reports[kind], probe_stages, since)
    sampler.stop()
    return {**figures, "mongo_cpu_s": mongo_cpu, "listed_s": listed_s, "loads": loads, "agree": agree, "probe": probe}


