"""Measuring helpers: RSS sampler, timed stages, the MongoDB cursor clock, the timed Sheets client."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from devstack import clients

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def ru_maxrss_mb() -> float:
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
        # hash(_id) of every document returned, per stage: 8 bytes a document (not the ids
        # themselves), so counting distinct documents barely moves the task's peak RSS.
        self.id_hashes: dict[str, array] = {}

    def distinct(self, stages: list[str] | None = None) -> int | None:
        """Distinct documents (by ``_id``) over ``stages`` (all by default); None if none carried _id."""
        stages = list(self.by_stage) if stages is None else stages
        chosen = [self.id_hashes[s] for s in stages if s in self.id_hashes]
        if not chosen and any(self.by_stage[s] for s in stages):
            return None
        return len(set().union(*chosen))

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
            if "_id" in doc:  # the window scan projects _id away
                self.id_hashes.setdefault(stage, array("q")).append(hash(doc["_id"]))
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

    def __getattr__(self, name: str) -> Any:
        # The watermark's find_one and the like: single documents, not the cursors the bench times.
        return getattr(self._collection, name)


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


def sheets_client() -> Any:
    """A ``SheetsClient`` that also adds up the time spent in HTTP round trips."""
    from leadflow.reports.sheets_api import SheetsClient

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


def stage_named(task: dict[str, Any], name: str) -> dict[str, Any]:
    """A stage of a task's figures, by name."""
    return next(s for s in task["stages"] if s["name"] == name)
