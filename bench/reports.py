"""Benchmark of the interaction reports: extract → transform → load against the stand-ins.

    python -m bench.reports [--interactions 1000000] [--hot 100000] [--no-scale-probe]

Starts its own stand-in stack in a temporary folder and seeds ``--interactions`` interactions
(about one user per 20), ``--hot`` of them in the hour before the seed's end (20:00-21:00 IST).
Then measures, in the same run:

1. **ours** — the 21:00 run of ``interaction_reports`` without the scheduler: the DAG's step
   functions (``leadflow.reports.pipeline.extract_step``, ``transform_step`` ×2, ``load_step`` ×2)
   called directly, each in a fresh process (multiprocessing, spawn) as each task is on a worker,
   so every task has its own peak RSS. Connections and Variables come from ``AIRFLOW_CONN_*`` /
   ``AIRFLOW_VAR_*`` environment variables (Airflow 3.3.1 resolves both outside a task, no
   metadata DB needed; the spreadsheet ids are created beforehand, as the first run would).
   The stages inside each task are timed by wrapping the names the pipeline module calls
   (``extract``, ``read_frame``/``write_frame``, the transforms, ``upsert``); MongoDB cursors
   are timed through a thin proxy around the database ``get_database`` returns; the Sheets
   client is a ``SheetsClient`` subclass that times the HTTP round trips. Each report is loaded
   twice: into an empty spreadsheet (every row added), then again (every row updated in place).
   After the extract task's figures are taken, its queries are replayed as raw BSON (no
   decoding, no frames), and again with short ``$in`` lists, to say how much is the stand-in;
2. **naive** — in one fresh process: ``pd.DataFrame(list(find()))`` of both collections, the same
   transforms over every session and user, and a full rewrite of each tab (``values.clear`` +
   one ``values.update``). Its rows for the keys ours touched must equal ours (by digest).
   Afterwards, unless ``--no-scale-probe``, ``upsert`` runs on the naive's full-collection
   reports (twice), to show ours' write calls at a large row count.

Sheets calls and request bytes come from ``client.calls`` and are cross-checked against the
stand-in's ``/_control/calls``. The stand-ins' RSS (``/proc/<pid>/status``) and CPU seconds
(``/proc/<pid>/stat``) are printed as well; they are separate processes, not in our peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from devstack import clients
from devstack.seed import SeedSpec, seed_database
from devstack.services import running_stack

TARGET_TRANSFORM_S = 5.0
SHARED_DRIVE_FOLDER = "local-shared-drive-folder"  # the Sheets stand-in's
TARGET_PEAK_RSS_MB = 500.0
TARGET_WRITES_PER_REPORT = 3
REPORTS = ("sessions", "consolidated")
DAG_ID, RUN_ID = "interaction_reports", "bench__2026-11-20T15:30:00+00:00"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SHORT_IN = 100  # $in list length of the what-if replay (extract.ID_CHUNK is 1,000)
HTTP_TIMEOUT_S = 900  # googleapiclient's default 60 s socket timeout is too short for the big writes


# -- measuring helpers -------------------------------------------------------------------------


def proc_status_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds a process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Samples this process's VmRSS every few ms on a thread, so each stage gets its own peak."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    @staticmethod
    def current() -> float:
        return proc_status_mb()["VmRSS"]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def reset(self) -> None:
        self.peak = self.current()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    calls: int = 0
    note: str = ""


@dataclass
class Stages:
    """Wall time and sampled peak RSS per named stage; a name used again accumulates."""

    sampler: RssSampler
    items: list[Stage] = field(default_factory=list)

    @contextmanager
    def run(self, name: str) -> Iterator[Stage]:
        stage = next((s for s in self.items if s.name == name), None)
        if stage is None:
            stage = Stage(name)
            self.items.append(stage)
        self.sampler.reset()
        started = time.perf_counter()
        try:
            yield stage
        finally:
            stage.seconds += time.perf_counter() - started
            stage.peak_mb = max(stage.peak_mb, self.sampler.peak, self.sampler.current())
            stage.calls += 1

    def wrap(self, module: Any, attr: str, name: str | Callable[[], str], keep: list | None = None) -> None:
        """Time every call of ``module.attr`` (as the pipeline module looks it up) as a stage."""
        original = getattr(module, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.run(name() if callable(name) else name):
                result = original(*args, **kwargs)
            if keep is not None:
                keep.append(result)
            return result

        setattr(module, attr, timed)


class CursorClock:
    """Time spent waiting on MongoDB cursors (server work, transfer, BSON decoding), and the
    queries issued, for replaying them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.docs = 0
        self.queries: list[tuple[str, tuple, dict]] = []
        self.by_stage: Counter[str] = Counter()  # "collection by field" -> documents returned
        self.stage_queries: Counter[str] = Counter()

    def timed(self, cursor: Any, stage: str = "") -> Iterator[dict]:
        clock = time.perf_counter
        iterator = iter(cursor)
        while True:
            started = clock()
            try:
                doc = next(iterator)
            except StopIteration:
                self.seconds += clock() - started
                return
            self.seconds += clock() - started
            self.docs += 1
            self.by_stage[stage] += 1
            yield doc


class TimedCollection:
    def __init__(self, collection: Any, clock: CursorClock) -> None:
        self._collection, self._clock = collection, clock

    def find(self, *args: Any, **kwargs: Any) -> Iterator[dict]:
        self._clock.queries.append((self._collection.name, args, kwargs))
        query = args[0] if args else kwargs.get("filter") or {}
        stage = f"{self._collection.name} by {next(iter(query), 'all')}"
        self._clock.stage_queries[stage] += 1
        return self._clock.timed(self._collection.find(*args, **kwargs), stage)


class TimedDatabase:
    """What ``extract`` needs of a pymongo Database (``db[name].find``), with cursors timed."""

    def __init__(self, db: Any, clock: CursorClock) -> None:
        self.db, self._clock = db, clock

    def __getitem__(self, name: str) -> TimedCollection:
        return TimedCollection(self.db[name], self._clock)


def replay_raw(db: Any, queries: list[tuple[str, tuple, dict]]) -> tuple[float, int]:
    """Drain the queries' cursors as raw BSON (no decoding, no frames): the stand-in + the wire."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    options = CodecOptions(document_class=RawBSONDocument)
    started, docs = time.perf_counter(), 0
    for name, args, kwargs in queries:
        for _ in db.get_collection(name, codec_options=options).find(*args, **kwargs):
            docs += 1
    return time.perf_counter() - started, docs


def rechunked(queries: list[tuple[str, tuple, dict]], size: int) -> list[tuple[str, tuple, dict]]:
    """The same queries with every ``{field: {"$in": [...]}}`` list cut into lists of ``size``."""
    out: list[tuple[str, tuple, dict]] = []
    for name, args, kwargs in queries:
        query = args[0] if args else None
        if isinstance(query, dict) and len(query) == 1:
            ((name_of_field, condition),) = query.items()
            if isinstance(condition, dict) and list(condition) == ["$in"] and len(condition["$in"]) > size:
                values = condition["$in"]
                out += [
                    (name, ({name_of_field: {"$in": values[i : i + size]}}, *args[1:]), kwargs)
                    for i in range(0, len(values), size)
                ]
                continue
        out.append((name, args, kwargs))
    return out


def sheets_client() -> Any:
    """A ``SheetsClient`` that also adds up the time spent in HTTP round trips."""
    from leadflow.reports.sheets import SheetsClient

    class TimedSheetsClient(SheetsClient):
        http_seconds = 0.0

        def execute(self, request: Any, kind: str) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                return super().execute(request, kind)
            finally:
                self.http_seconds += time.perf_counter() - started

    return TimedSheetsClient()


def stand_in_calls(url: str, since: int, expected: int) -> tuple[dict[str, int], int]:
    """Reads, writes and request bytes the Sheets stand-in logged after the first ``since`` calls.

    The stand-in logs a call after sending its response, so wait (briefly) for ``expected`` calls.
    """
    deadline = time.monotonic() + 5
    while len(log := clients.calls(url)) - since < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    new = log[since:]
    return {
        "reads": sum(1 for c in new if c["method"] == "GET"),
        "writes": sum(1 for c in new if c["method"] != "GET"),
        "request_bytes": sum(c["request_bytes"] for c in new),
        "largest_request": max((c["request_bytes"] for c in new), default=0),
        "failed": sum(1 for c in new if c["status"] >= 400),
    }, len(log)


def rows_digest(frame: Any, kind: str, keys: list[str] | None = None) -> tuple[str, int]:
    """A digest of a report's sheet rows (as written), optionally only those of ``keys``."""
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.sheets import frame_rows

    spec = SPECS[kind]
    if keys is not None:
        frame = frame[frame[spec.key].astype(str).isin(set(keys))]
    # Without Updated: when a run read its data differs between ours and the naive peer.
    spec = replace(spec, columns=[c for c in spec.columns if c != spec.version_column])
    rows = sorted(json.dumps(row, default=str) for row in frame_rows(frame, spec))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest(), len(rows)


# -- the children ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    mongo_uri: str
    sheets_url: str
    mongo_pid: int
    sheets_pid: int
    window_start: datetime
    window_end: datetime
    ours_keys: dict[str, list[str]] = field(default_factory=dict)
    scale_probe: bool = True


def _prepare_child(sheets: bool) -> tuple[RssSampler, Any]:
    """Imports (and the Sheets client) before the baseline RSS is taken.

    googleapiclient builds a resource's methods, with docstrings pretty-printed from the
    discovery document, on first use: so the requests the paths use are built (not sent) here.
    """
    socket.setdefaulttimeout(HTTP_TIMEOUT_S)
    # The steps log their data-quality counts as warnings; the summary prints them instead.
    logging.getLogger("leadflow").setLevel(logging.ERROR)
    import pandas  # noqa: F401
    import pymongo  # noqa: F401
    from airflow.providers.mongo.hooks.mongo import MongoHook  # noqa: F401

    import leadflow.mongo
    import leadflow.objectstore
    import leadflow.reports.extract
    import leadflow.reports.pipeline
    import leadflow.reports.transform  # noqa: F401

    client = None
    if sheets:
        client = sheets_client()
        spreadsheets = client.sheets.spreadsheets()
        spreadsheets.create(body={})
        spreadsheets.get(spreadsheetId="warm-up")
        spreadsheets.batchUpdate(spreadsheetId="warm-up", body={})
        values = spreadsheets.values()
        values.batchGet(spreadsheetId="warm-up", ranges=["A1"])
        values.batchUpdate(spreadsheetId="warm-up", body={})
        values.clear(spreadsheetId="warm-up", range="A1", body={})
        values.update(spreadsheetId="warm-up", range="A1", body={}, valueInputOption="RAW")
    return RssSampler(), client


def _figures(task: str, stages: Stages, baseline: float) -> dict[str, Any]:
    items = sorted(stages.items, key=lambda s: s.name.startswith("task total"))  # totals last
    return {
        "task": task,
        "stages": [s.__dict__ for s in items],
        "baseline_mb": baseline,
        "peak_mb": proc_status_mb()["VmHWM"],
        "ru_maxrss_mb": _ru_maxrss_mb(),
    }


def new_spreadsheet(client: Any, title: str, tabs: list[str], width: int) -> str:
    """What a first run does: create in the shared-drive folder, then the report's tabs."""
    from leadflow.reports.sheets import new_tab_properties

    spreadsheet_id = client.create_spreadsheet(title, SHARED_DRIVE_FOLDER)
    requests = [{"addSheet": {"properties": new_tab_properties(tab, width)}} for tab in tabs]
    if requests:
        body = {"requests": requests}
        client.execute(client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body=body), "writes")
    return spreadsheet_id


def extract_task(job: Job) -> dict[str, Any]:
    """The ``extract`` task: ``extract_step`` (window scan, reads, frames, handoff writes)."""
    sampler, _ = _prepare_child(sheets=False)
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
    figures = _figures("extract", stages, baseline)

    # Not part of the task: the same queries again, to split the extract between Mongo and us,
    # and with shorter $in lists (the stand-in checks each document against the whole list).
    db = databases[-1]
    drain_cpu = cpu_seconds(job.mongo_pid)
    drain_raw_s, drain_docs = replay_raw(db, clock.queries)
    drain_cpu = cpu_seconds(job.mongo_pid) - drain_cpu
    short_queries = rechunked(clock.queries, SHORT_IN)
    drain_short_s, _ = replay_raw(db, short_queries)
    sampler.stop()
    _stage(figures, "extract (MongoDB → frames)")["note"] = (
        f"{extracted['window_interactions']:,} in window → {extracted['touched_sessions']:,} sessions, "
        f"{extracted['touched_users']:,} users; {extracted['interactions_read']:,} interactions read"
    )
    _stage(figures, "write handoff (object store)")["note"] = "interactions, users, touched ids"
    return {
        **figures,
        "xcom": extracted,
        "extract": {
            "window_interactions": extracted["window_interactions"],
            "interactions_read": extracted["interactions_read"],
            "queries": len(clock.queries),
            "per_stage": {
                s: {"queries": n, "docs": clock.by_stage[s]} for s, n in clock.stage_queries.items()
            },
            "cursor_wait_s": clock.seconds,
            "cursor_docs": clock.docs,
            "mongo_cpu_s": mongo_cpu,
            "drain_raw_s": drain_raw_s,
            "drain_docs": drain_docs,
            "drain_mongo_cpu_s": drain_cpu,
            "drain_short_s": drain_short_s,
            "short_queries": len(short_queries),
        },
    }


def transform_task(job: Job, kind: str, extracted: dict[str, Any]) -> dict[str, Any]:
    """The ``transform_<kind>`` task: ``transform_step`` (handoff reads, transform, report write)."""
    sampler, _ = _prepare_child(sheets=False)
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
    figures = _figures(f"transform_{kind}", stages, baseline)
    sampler.stop()
    report, _ = reports[0]
    key = pipeline.SPECS[kind].key
    _stage(figures, "transform")["note"] = f"{len(report):,} rows"
    return {
        **figures,
        "xcom": transformed,
        "keys": report[key].astype(str).tolist(),
        "digest": rows_digest(report, kind),
    }


def load_task(job: Job, kind: str, transformed: dict[str, Any]) -> dict[str, Any]:
    """The ``write_<kind>`` task, twice: ``load_step`` into an empty spreadsheet, then again."""
    sampler, client = _prepare_child(sheets=True)
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
    stages.wrap(pipeline, "upsert", lambda: f"upsert ({attempt[0]})")
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
    return {**_figures(f"write_{kind}", stages, baseline), "runs": runs}


def _upsert_twice(
    client: Any, job: Job, kind: str, frame: Any, stages: Stages, since: int
) -> tuple[list[dict[str, Any]], int]:
    """Create a spreadsheet for ``kind``, then ``upsert`` ``frame`` into it twice; per-run figures."""
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.sheets import upsert

    spec = SPECS[kind]
    tabs = sorted(set(spec.tab_of(frame))) if len(frame) else ["Leads"]
    spreadsheet_id = new_spreadsheet(client, f"{spec.title} (scale probe)", tabs, len(spec.columns))
    _, since = stand_in_calls(job.sheets_url, since, 2)  # create + its tabs
    runs = []
    for attempt in ("1st: rows added", "2nd: rows updated"):
        http_before, cpu_before = client.http_seconds, cpu_seconds(job.sheets_pid)
        with stages.run(f"load {kind} ({attempt})") as stage:
            result = upsert(client, spreadsheet_id, frame, spec)
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


def naive(job: Job) -> dict[str, Any]:
    """Everything in, everything recomputed, every tab rewritten."""
    sampler, client = _prepare_child(sheets=True)
    import pandas as pd
    import pymongo
    from bson.codec_options import CodecOptions

    from leadflow.config import DEFAULT_DATABASE, INTERACTIONS, USERS
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.sheets import column_letter, frame_rows, quote_tab
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
    figures = _figures("naive", stages, baseline)
    agree = {kind: rows_digest(reports[kind], kind, job.ours_keys.get(kind, [])) for kind in REPORTS}

    # Ours' upsert at the full-collection row count (a large backfill): not in the naive figures.
    probe: dict[str, list[dict[str, Any]]] = {}
    if job.scale_probe:
        probe_stages = Stages(sampler)
        for kind in REPORTS:
            probe[kind], since = _upsert_twice(client, job, kind, reports[kind], probe_stages, since)
    sampler.stop()
    return {**figures, "mongo_cpu_s": mongo_cpu, "listed_s": listed_s, "loads": loads, "agree": agree, "probe": probe}


# -- the parent: stack, seeding, children, the printout -----------------------------------------


def in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def stand_in_memory(stack: Any) -> dict[str, dict[str, float]]:
    return {name: proc_status_mb(stack.pids[name]) for name in ("mongo", "sheets")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000, help="total, hot hour included")
    parser.add_argument("--hot", type=int, default=100_000, help="of which in the hour before the seed's end")
    parser.add_argument("--no-scale-probe", action="store_true", help="skip ours' upsert at full-collection size")
    args = parser.parse_args(argv)
    if not 0 < args.hot < args.interactions:
        parser.error("need 0 < --hot < --interactions")

    tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-reports-"))
    # Airflow reads its configuration on first import (in the children): set it up first.
    from devstack.airflow_home import airflow_env

    os.environ.update(airflow_env(tmp / "airflow"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    try:
        with running_stack(tmp / "stack") as stack:
            host, port = stack.mongo_uri.removeprefix("mongodb://").rsplit(":", 1)
            os.environ.update(
                {
                    "AIRFLOW_CONN_MONGO_DEFAULT": json.dumps(
                        {"conn_type": "mongo", "host": host, "port": int(port), "schema": "leadflow"}
                    ),
                    "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                        {"conn_type": "google_cloud_platform", "extra": {"api_endpoint": stack.sheets_url}}
                    ),
                    "AIRFLOW_VAR_LEADFLOW_OBJECT_STORE_BASE": (tmp / "objects").as_uri() + "/",
                }
            )
            run(args, stack)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, stack: Any) -> None:
    spec = SeedSpec(interactions=args.interactions - args.hot, hot_hour_interactions=args.hot)
    print(f"seeding {args.interactions:,} interactions ({args.hot:,} in the hour before {spec.end:%Y-%m-%d %H:%M} "
          f"IST) into the MongoDB stand-in ...", flush=True)  # fmt: skip
    started = time.perf_counter()
    seeded = seed_database(stack.mongo_uri, spec)
    seed_s = time.perf_counter() - started
    print(f"seeded {seeded['interactions']:,} interactions, {seeded['users']:,} users in {seed_s:.1f} s "
          f"({seed_s / seeded['interactions'] * 1e5:.1f} s per 100k, indexes included)", flush=True)  # fmt: skip
    memory = {"after seeding": stand_in_memory(stack)}

    # The 21:00 IST run: data interval 20:00-21:00, widened by the default 15 min lookback.
    from leadflow.config import DEFAULT_LOOKBACK_MINUTES
    from leadflow.reports.window import report_window

    end = spec.end.astimezone(UTC)
    window = report_window(end - timedelta(hours=1), end, end, DEFAULT_LOOKBACK_MINUTES)
    job = Job(
        mongo_uri=stack.mongo_uri,
        sheets_url=stack.control_url("sheets"),
        mongo_pid=stack.pids["mongo"],
        sheets_pid=stack.pids["sheets"],
        window_start=window.start,
        window_end=window.end,
        scale_probe=not args.no_scale_probe,
    )
    print(f"window {window.start:%H:%M}-{window.end:%H:%M} UTC; ours: extract task ...", flush=True)
    tasks = [in_child(extract_task, job)]
    extracted = tasks[0]["xcom"]
    for kind in REPORTS:
        print(f"ours: transform_{kind} task ...", flush=True)
        tasks.append(in_child(transform_task, job, kind, extracted))
    for kind, transformed in zip(REPORTS, [t["xcom"] for t in tasks[1:]], strict=True):
        print(f"ours: write_{kind} task (twice) ...", flush=True)
        tasks.append(in_child(load_task, job, kind, transformed))
    memory["after ours"] = stand_in_memory(stack)
    print("naive peer ...", flush=True)
    keys = {kind: task["keys"] for kind, task in zip(REPORTS, tasks[1:3], strict=True)}
    peer = in_child(naive, Job(**{**job.__dict__, "ours_keys": keys}))
    memory["after naive"] = stand_in_memory(stack)
    report(args, seed_s, seeded, tasks, peer, memory)


# -- the printout ------------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value:,.0f} MB"


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _stage(task: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in task["stages"] if s["name"] == name)


def _print_load(kind: str, load: dict[str, Any]) -> None:
    checked = load["stand_in"]
    same = "=" if (load["reads"], load["writes"], load["request_bytes"]) == (
        checked["reads"], checked["writes"], checked["request_bytes"]) else "≠"  # fmt: skip
    print(f"    {kind:<13} {load['attempt']:<18} {load['rows']:>7,} {load['reads']:>3}/{checked['reads']:<3} "
          f"{load['writes']:>3}/{checked['writes']:<3} "
          f"{load['request_bytes']:>11,}{same}{checked['request_bytes']:<11,} "
          f"{checked['largest_request']:>10,} {load['http_seconds']:>8.2f}s "
          f"{load['stand_in_cpu']:>11.2f}s")  # fmt: skip


LOAD_HEADER = (
    f"    {'report':<13} {'run':<18} {'rows':>7} {'reads':>7} {'writes':>7} {'request bytes':>23} "
    f"{'largest':>10} {'HTTP wait':>9} {'stand-in CPU':>12}"
)


def report(
    args: argparse.Namespace,
    seed_s: float,
    seeded: dict[str, int],
    tasks: list[dict[str, Any]],
    peer: dict[str, Any],
    memory: dict[str, dict[str, dict[str, float]]],
) -> None:
    extract, transforms, loads = tasks[0], tasks[1:3], tasks[3:5]
    ex = extract["extract"]
    print(f"\n=== interaction reports: {seeded['interactions']:,} interactions, {seeded['users']:,} users, "
          f"{args.hot:,} in the hot hour; seeding {seed_s:.1f} s (in no figure below) ===")  # fmt: skip

    print("\nOURS: the DAG's steps, each task in a fresh process (peak RSS per stage sampled every 20 ms)")
    print(f"  {'task / stage':<44} {'wall s':>8} {'peak RSS':>10}  notes")
    for task in tasks:
        print(f"  {task['task']:<44} {'':>8} {_mb(task['peak_mb']):>10}  peak of the process (VmHWM); "
              f"{_mb(task['baseline_mb'])} after imports")  # fmt: skip
        for stage in task["stages"]:
            calls = f" ×{stage['calls']}" if stage["calls"] > 1 else ""
            print(f"    {stage['name'] + calls:<42} {stage['seconds']:>8.2f} {_mb(stage['peak_mb']):>10}  "
                  f"{stage['note']}")  # fmt: skip

    extract_s = _stage(extract, "extract (MongoDB → frames)")["seconds"]
    transform_s = {t["task"]: _stage(t, "transform")["seconds"] for t in transforms}
    totals = {
        attempt: _stage(extract, "task total")["seconds"]
        + sum(_stage(t, "task total")["seconds"] for t in transforms)
        + sum(_stage(t, f"task total ({attempt})")["seconds"] for t in loads)
        for attempt in ("1st: rows added", "2nd: rows updated")
    }
    ours_peak = max(t["peak_mb"] for t in tasks)
    print(f"  path total (sum of the task totals): {totals['1st: rows added']:.2f} s with the 1st loads, "
          f"{totals['2nd: rows updated']:.2f} s with the 2nd; highest task peak RSS {_mb(ours_peak)}")  # fmt: skip

    wait = ex["cursor_wait_s"]
    print("\n  extract queries per stage (documents returned; interactions are then de-duplicated by _id):")
    for stage_name, figures in ex["per_stage"].items():
        print(f"    {stage_name:<28} {figures['queries']:>5} queries {figures['docs']:>10,} docs returned")
    print(f"    interactions: {ex['interactions_read']:,} distinct")
    print("\n  MongoDB stand-in share of the extract:")
    print(f"    waiting on cursors (stand-in + wire + BSON decoding): {wait:.2f} s of {extract_s:.2f} s "
          f"({wait / extract_s:.0%}); building frames and the rest: {extract_s - wait:.2f} s "
          f"({ex['cursor_docs']:,} docs from {ex['queries']} queries)")  # fmt: skip
    print(f"    the same queries replayed as raw BSON (stand-in + wire only): {ex['drain_raw_s']:.2f} s; "
          f"stand-in CPU {ex['mongo_cpu_s']:.2f} s during the task, {ex['drain_mongo_cpu_s']:.2f} s during "
          f"the replay")  # fmt: skip
    print(f"    → MongoDB (the stand-in) is {wait / extract_s:.0%} of the extract and "
          f"{wait / totals['1st: rows added']:.0%} of the whole path")  # fmt: skip
    print(f"    what-if: the replay with $in lists of {SHORT_IN} ids ({ex['short_queries']} queries): "
          f"{ex['drain_short_s']:.2f} s, {ex['drain_raw_s'] / ex['drain_short_s']:.1f}x faster (the stand-in "
          f"matches every fetched document against the whole $in list; MongoDB does not)")  # fmt: skip

    print("\n  Sheets calls per report and run (client count / stand-in /_control/calls):")
    print(LOAD_HEADER)
    for kind, task in zip(REPORTS, loads, strict=True):
        for load in task["runs"]:
            _print_load(kind, load)
    print("    (+1 write per report for spreadsheets.create on the very first run)")
    dq = {t["task"]: t["xcom"]["data_quality"] for t in transforms}
    print(f"  data quality: {dq}")

    print(f"\nNAIVE PEER (one process; {_mb(peer['baseline_mb'])} after imports)")
    print(f"  {'stage':<44} {'wall s':>8} {'peak RSS':>10}  notes")
    for stage in peer["stages"]:
        print(f"    {stage['name']:<42} {stage['seconds']:>8.2f} {_mb(stage['peak_mb']):>10}  {stage['note']}")
    naive_total = sum(s["seconds"] for s in peer["stages"])
    print(f"  total {naive_total:.2f} s; peak RSS (VmHWM) {_mb(peer['peak_mb'])}; stand-in CPU while loading "
          f"the collections {peer['mongo_cpu_s']:.2f} s")  # fmt: skip
    for kind in REPORTS:
        load = peer["loads"][kind]
        print(f"    {kind:<13} {load['rows']:>7,} rows: {load['reads']} reads, {load['writes']} writes "
              f"({load['stand_in']['writes']} at the stand-in), {load['request_bytes']:,} bytes "
              f"({load['stand_in']['request_bytes']:,} at the stand-in; largest request "
              f"{load['stand_in']['largest_request']:,})")  # fmt: skip
    agree = {kind: peer["agree"][kind] == t["digest"] for kind, t in zip(REPORTS, transforms, strict=True)}
    print(f"  naive rows for ours' keys equal ours: {agree} "
          f"({', '.join(f'{t['digest'][1]:,} {k}' for k, t in zip(REPORTS, transforms, strict=True))})")  # fmt: skip

    print("\nRATIOS (naive / ours)")
    print(f"  time:      {naive_total / totals['1st: rows added']:6.2f}x vs ours with the 1st loads, "
          f"{naive_total / totals['2nd: rows updated']:6.2f}x with the 2nd")  # fmt: skip
    ours_rest = totals["1st: rows added"] - ex["cursor_wait_s"]
    naive_rest = naive_total - peer["listed_s"]
    print(f"  time without waiting on MongoDB: {naive_rest / ours_rest:6.2f}x ({naive_rest:.2f} s: all but "
          f"list(find()); {ours_rest:.2f} s: all but the extract's cursor waits, 1st loads)")  # fmt: skip
    print(f"  peak RSS:  {peer['peak_mb'] / ours_peak:6.2f}x (naive process vs ours' highest task)")
    for kind, task in zip(REPORTS, loads, strict=True):
        first, second = (run["request_bytes"] for run in task["runs"])
        naive_bytes = peer["loads"][kind]["request_bytes"]
        print(f"  Sheets bytes, {kind:<13} {naive_bytes / first:6.2f}x vs the 1st run, "
              f"{naive_bytes / second:6.2f}x vs the 2nd")  # fmt: skip
    transform_ratio = (
        (_stage(peer, "transform sessions")["seconds"] + _stage(peer, "transform consolidated")["seconds"])
        / sum(transform_s.values())
    )  # fmt: skip
    print(f"  transform time: {transform_ratio:6.2f}x; reading MongoDB: "
          f"{_stage(peer, 'load collections')['seconds'] / extract_s:6.2f}x (list(find()) of everything vs "
          f"ours' extract)")  # fmt: skip

    if peer["probe"]:
        print("\nSCALE PROBE: ours' upsert on the full-collection reports (say, a large backfill)")
        print(LOAD_HEADER)
        for kind in REPORTS:
            for load in peer["probe"][kind]:
                _print_load(kind, load)

    print("\nSTAND-IN PROCESSES (not in the figures above): RSS now / peak")
    for when, stand_ins in memory.items():
        text = ", ".join(f"{name} {_mb(m['VmRSS'])} / {_mb(m['VmHWM'])}" for name, m in stand_ins.items())
        print(f"  {when:<14} {text}")

    writes = [run["writes"] for task in loads for run in task["runs"]]
    probe_runs = [load for kind in REPORTS for load in peer["probe"].get(kind, [])]
    total_transform = sum(transform_s.values())
    print("\nTARGETS")
    print(f"  transform of the hot hour ({ex['window_interactions']:,} window interactions, "
          f"{ex['interactions_read']:,} read) < {TARGET_TRANSFORM_S:g} s: {total_transform:.2f} s "
          f"({' + '.join(f'{k} {v:.2f}' for k, v in transform_s.items())})"
          f"  {_pass(total_transform < TARGET_TRANSFORM_S)}")  # fmt: skip
    worst = max(tasks, key=lambda t: t["peak_mb"])
    print(f"  peak RSS < {TARGET_PEAK_RSS_MB:g} MB: {_mb(ours_peak)} ({worst['task']} task; "
          f"{', '.join(f'{t['task']} {_mb(t['peak_mb'])}' for t in tasks if t is not worst)})"
          f"  {_pass(ours_peak < TARGET_PEAK_RSS_MB)}")  # fmt: skip
    print(f"  Sheets writes per report per run <= {TARGET_WRITES_PER_REPORT}: max {max(writes)} at this run's "
          f"row counts  {_pass(max(writes) <= TARGET_WRITES_PER_REPORT)}")  # fmt: skip
    if probe_runs:
        worst_probe = max(probe_runs, key=lambda r: r["writes"])
        print(f"    ... at any row count: max {worst_probe['writes']} ({worst_probe['rows']:,} rows, "
              f"{worst_probe['attempt']}) in the scale probe  "
              f"{_pass(worst_probe['writes'] <= TARGET_WRITES_PER_REPORT)}")  # fmt: skip
    failed = [run["stand_in"]["failed"] for task in loads for run in task["runs"]]
    if any(failed) or not all(agree.values()):
        print("  WARNING: failed Sheets calls or rows that differ from the naive peer's, see above", file=sys.stderr)


if __name__ == "__main__":
    main()
