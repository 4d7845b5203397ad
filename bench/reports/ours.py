"""Ours: the DAG's step functions, one task per fresh process, each stage timed."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from bench.reports.child import DAG_ID, RUN_ID, Job, new_spreadsheet, prepare_child, task_figures
from bench.reports.measure import (
    CursorClock,
    RssSampler,
    Stages,
    TimedDatabase,
    cpu_seconds,
    replay_raw,
    rows_digest,
    stage_named,
    stand_in_calls,
)
from devstack import clients


def extract_task(job: Job) -> dict[str, Any]:
    """The ``extract`` task: ``extract_step`` (window scan, reads, frames, handoff writes)."""
    sampler, _ = prepare_child(sheets=False)
    import leadflow.mongo
    from leadflow.reports import pipeline
    from leadflow.reports.window import ReportWindow

    clock = CursorClock()
    real_get_database = leadflow.mongo.get_database
    databases: list[Any] = []

    def get_database(*args: Any, **kwargs: Any) -> TimedDatabase:
        databases.append(real_get_database(*args, **kwargs))
        return TimedDatabase(databases[-1], clock)

    leadflow.mongo.get_database = get_database
    baseline = RssSampler.current()
    stages = Stages(sampler)
    stages.wrap(pipeline, "extract", "extract (MongoDB → frames)")
    stages.wrap(pipeline, "write_frame", "write handoff (object store)")
    window = ReportWindow(job.window_start, job.window_end, job.window_end - timedelta(hours=1), manual=False)
    mongo_cpu = cpu_seconds(job.mongo_pid)
    with stages.run("task total"):
        extracted = pipeline.extract_step(DAG_ID, RUN_ID, window)
    mongo_cpu = cpu_seconds(job.mongo_pid) - mongo_cpu
    figures = task_figures("extract", stages, baseline)

    # Not part of the task: the same queries again, to split the extract between Mongo and us.
    db = databases[-1]
    drain_cpu = cpu_seconds(job.mongo_pid)
    drain_raw_s, drain_docs = replay_raw(db, clock.queries)
    drain_cpu = cpu_seconds(job.mongo_pid) - drain_cpu
    sampler.stop()
    stage_named(figures, "extract (MongoDB → frames)")["note"] = (
        f"{extracted['window_interactions']:,} in window → {extracted['touched_sessions']:,} sessions, "
        f"{extracted['touched_users']:,} users; {extracted['interactions_read']:,} interactions read"
    )
    stage_named(figures, "write handoff (object store)")["note"] = "interactions, users, touched ids"
    return {
        **figures,
        "xcom": extracted,
        "extract": {
            "window_interactions": extracted["window_interactions"],
            "interactions_read": extracted["interactions_read"],
            "queries": len(clock.queries),
            "per_stage": {
                s: {"queries": n, "docs": clock.by_stage[s], "distinct": clock.distinct([s])}
                for s, n in clock.stage_queries.items()
            },
            "per_collection": {
                name: {
                    "queries": sum(n for s, n in clock.stage_queries.items() if s in stages),
                    "docs": sum(clock.by_stage[s] for s in stages),
                    "distinct": clock.distinct(stages),
                }
                for name in dict.fromkeys(s.split(" by ")[0] for s in clock.stage_queries)
                for stages in [[s for s in clock.stage_queries if s.split(" by ")[0] == name]]
            },
            "cursor_wait_s": clock.seconds,
            "cursor_docs": clock.docs,
            "mongo_cpu_s": mongo_cpu,
            "drain_raw_s": drain_raw_s,
            "drain_docs": drain_docs,
            "drain_mongo_cpu_s": drain_cpu,
        },
    }


def transform_task(job: Job, kind: str, extracted: dict[str, Any]) -> dict[str, Any]:
    """The ``transform_<kind>`` task: ``transform_step`` (handoff reads, transform, report write)."""
    sampler, _ = prepare_child(sheets=False)
    from leadflow.reports import pipeline

    baseline = RssSampler.current()
    stages = Stages(sampler)
    reports: list[Any] = []
    stages.wrap(pipeline, "read_frame", "read handoff (object store)")
    transform = "session_report" if kind == "sessions" else "consolidated_report"
    stages.wrap(pipeline, transform, "transform", keep=reports)
    stages.wrap(pipeline, "write_frame", "write report (object store)")
    with stages.run("task total"):
        transformed = pipeline.transform_step(kind, extracted)
    figures = task_figures(f"transform_{kind}", stages, baseline)
    sampler.stop()
    report, _ = reports[0]
    key = pipeline.SPECS[kind].key
    stage_named(figures, "transform")["note"] = f"{len(report):,} rows"
    return {
        **figures,
        "xcom": transformed,
        "keys": report[key].astype(str).tolist(),
        "digest": rows_digest(report, kind),
    }


def load_task(job: Job, kind: str, transformed: dict[str, Any]) -> dict[str, Any]:
    """The ``write_<kind>`` task, twice: ``load_step`` into an empty spreadsheet, then again."""
    sampler, client = prepare_child(sheets=True)
    from leadflow.reports import pipeline

    spec = pipeline.SPECS[kind]
    # What the first run's ensure_spreadsheet does (it would also store the id in a Variable).
    frame = pipeline.read_frame(transformed["path"], sorted(spec.datetime_columns), spec.columns)
    tabs = sorted(set(spec.tab_of(frame))) if len(frame) else []
    spreadsheet_id = new_spreadsheet(client, spec.title, tabs or ["Leads"], len(spec.columns))
    del frame
    os.environ[f"AIRFLOW_VAR_{pipeline.SPREADSHEET_VARIABLES[kind].upper()}"] = spreadsheet_id
    pipeline.SheetsClient = lambda *_args, **_kwargs: client
    since = len(clients.calls(job.sheets_url))
    baseline = RssSampler.current()
    stages = Stages(sampler)
    attempt = ["1st: rows added"]
    stages.wrap(pipeline, "read_frame", lambda: f"read report ({attempt[0]})")
    stages.wrap(pipeline, "write_report", lambda: f"upsert ({attempt[0]})")
    runs = []
    for name in ("1st: rows added", "2nd: rows updated"):
        attempt[0] = name
        http_before, cpu_before = client.http_seconds, cpu_seconds(job.sheets_pid)
        with stages.run(f"task total ({name})") as stage:
            result = pipeline.load_step(kind, transformed)
        checked, since = stand_in_calls(job.sheets_url, since, result["reads"] + result["writes"])
        runs.append(
            {
                "attempt": name,
                "rows": result["rows_added"] + result["rows_updated"],
                "seconds": stage.seconds,
                "http_seconds": client.http_seconds - http_before,
                "stand_in_cpu": cpu_seconds(job.sheets_pid) - cpu_before,
                **result,
                "stand_in": checked,
            }
        )
        upsert_stage = next(s for s in stages.items if s.name == f"upsert ({name})")
        upsert_stage.note = (
            f"{result['rows_added']:,} added, {result['rows_updated']:,} updated; {result['reads']} reads, "
            f"{result['writes']} writes, {result['request_bytes'] / 1e6:.2f} MB; "
            f"HTTP wait {runs[-1]['http_seconds']:.2f} s"
        )
    sampler.stop()
    return {**task_figures(f"write_{kind}", stages, baseline), "runs": runs}


def upsert_twice(
    client: Any, job: Job, kind: str, frame: Any, stages: Stages, since: int
) -> tuple[list[dict[str, Any]], int]:
    """Create a spreadsheet for ``kind``, then ``upsert`` ``frame`` into it twice; per-run figures."""
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.sheets import upsert

    spec = SPECS[kind]
    tabs = sorted(set(spec.tab_of(frame))) if len(frame) else ["Leads"]
    spreadsheet_id = new_spreadsheet(client, f"{spec.title} (scale probe)", tabs, len(spec.columns))
    index = None
    if spec.row_index is not None:  # the lead tabs' row index: its own collection, apart from the task's
        from leadflow.mongo import get_database
        from leadflow.reports.row_index import RowIndex

        index = RowIndex(get_database(), f"{spec.row_index}_probe")
    _, since = stand_in_calls(job.sheets_url, since, 2)  # create + its tabs
    runs = []
    for attempt in ("1st: rows added", "2nd: rows updated"):
        http_before, cpu_before = client.http_seconds, cpu_seconds(job.sheets_pid)
        with stages.run(f"load {kind} ({attempt})") as stage:
            result = upsert(client, spreadsheet_id, frame, spec, index=index)
        checked, since = stand_in_calls(job.sheets_url, since, result.reads + result.writes)
        runs.append(
            {
                "attempt": attempt,
                "rows": len(frame),
                "seconds": stage.seconds,
                "http_seconds": client.http_seconds - http_before,
                "stand_in_cpu": cpu_seconds(job.sheets_pid) - cpu_before,
                **result.as_dict(),
                "stand_in": checked,
            }
        )
    return runs, since


