"""Follow-ups end to end through the DAG, on ``make run``'s shape and on the MWAA topology's shape.

    python -m bench.followups_e2e [--events 10000] [--shapes local,topology] [--path-events 2000]

One stand-in stack (OpenAI answering in 500 ms, WhatsApp in 100 ms with Meta's 6 s pair rate
limit, receipts flowing to the statuses queue), then for each shape: ``--events`` events queued
at once (one buyer each), the Airflow components started, ``whatsapp_followups`` and
``whatsapp_statuses`` unpaused, and the clock runs until every event is ``sent`` in the ledger
and the queue is empty. Shapes:

* ``local``: what ``make run`` starts (``devstack.run``): api-server, scheduler, dag-processor,
  triggerer, LocalExecutor, SQLite;
* ``topology``: what MWAA runs (``devstack.topology``): Postgres, Celery on Redis, two schedulers,
  two triggerers, two workers.

Printed per shape: time to drain (unpause to the last send), messages/s over the whole drain
and sustained (the middle 80 % of the sends), duplicates (WhatsApp messages per event, from the
stand-in's outbox), the ratio to the processing path measured in the same run (``bench.followups``'s
processing phase at the same send limit), and the CPU seconds of every process, sampled each
second: each Airflow component with the task processes it starts, and each stand-in. Variables
as production's defaults except ``leadflow_followup_concurrency`` and
``leadflow_followup_send_rate_per_second`` (``--concurrency``, ``--send-rate``), given as
``AIRFLOW_VAR_*`` environment variables.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.followups import OPENAI_LATENCY_S, WHATSAPP_LATENCY_S, Seeder, processing_phase
from devstack import clients
from devstack.services import Stack, free_port, running_stack

DAGS = ("whatsapp_followups", "whatsapp_statuses")
SAMPLE_S = 1.0
PATH_LABEL = "ceiling (processing path)"


@dataclass
class ShapeResult:
    shape: str
    messages: int
    drain_seconds: float
    sustained_rate: float
    duplicates: int
    runs: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.drain_seconds if self.drain_seconds else 0.0


class CpuSampler:
    """CPU seconds per process tree, sampled every second (psutil).

    A process is counted under the root it descends from: an Airflow component with the task
    processes it starts (Airflow titles those by task instance id only, so they are not told
    apart), or a stand-in. Each process's own time is counted, so nothing twice; one that ends
    between two samples loses at most its last second."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._seen: dict[tuple[int, float], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._baseline = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        for root, pid in self.roots.items():
            try:
                top = psutil.Process(pid)
                tree = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        self._seen[(proc.pid, proc.create_time())] = (root, times.user + times.system)
                except psutil.Error:
                    continue

    def totals(self) -> dict[str, float]:
        spent: dict[str, float] = defaultdict(float)
        for key, (label, seconds) in self._seen.items():
            spent[label] += seconds - self._baseline.get(key, (label, 0.0))[1]
        return dict(spent)


# -- the two shapes -----------------------------------------------------------------------------


def variables_env(concurrency: int, send_rate: float) -> dict[str, str]:
    return {
        "AIRFLOW_VAR_LEADFLOW_FOLLOWUP_CONCURRENCY": str(concurrency),
        "AIRFLOW_VAR_LEADFLOW_FOLLOWUP_SEND_RATE_PER_SECOND": f"{send_rate:g}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


@contextmanager
def local_shape(stack: Stack, root: Path, extra: dict[str, str]) -> Iterator[tuple[Any, dict[str, int]]]:
    """``make run``'s Airflow (devstack.run) on its own home and port; the API client and the PIDs."""
    from devstack.airflow_home import prepare_home
    from devstack.run import COMPONENTS, airflow_components, load_settings
    from devstack.topology import Topology

    port = free_port()
    env = {**prepare_home(root / "airflow", api_port=port), **extra}
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
    load_settings(stack, env)
    with airflow_components(env, root / "logs", port) as procs:
        api = Topology(root=root, env=env, api_url=f"http://127.0.0.1:{port}", db_dsn="")
        yield api, {name: proc.pid for name, proc in zip(COMPONENTS, procs, strict=True)}


@contextmanager
def topology_shape(stack: Stack, root: Path, extra: dict[str, str]) -> Iterator[tuple[Any, dict[str, int]]]:
    from devstack.topology import running_topology

    with running_topology(stack, extra_env=extra) as topology:
        yield topology, dict(topology.pids)


SHAPES: dict[str, Callable[[Stack, Path, dict[str, str]], AbstractContextManager[tuple[Any, dict[str, int]]]]] = {
    "local": local_shape,
    "topology": topology_shape,
}


def wait_for_dags(api: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            for dag_id in DAGS:
                api.api("GET", f"dags/{dag_id}")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def run_shape(shape: str, seeder: Seeder, root: Path, count: int, extra: dict[str, str], timeout: float) -> ShapeResult:
    stack = seeder.stack
    events = seeder.events(count, shape)
    seeder.enqueue(events)
    ids = [e["event_id"] for e in events]
    print(f"  [{shape}] {count} events queued; starting Airflow", flush=True)
    with SHAPES[shape](stack, root / shape, extra) as (api, pids):
        wait_for_dags(api)
        with CpuSampler({**pids, **{f"stand-in {n}": p for n, p in stack.pids.items()}}) as sampler:
            started = time.time()
            for dag_id in DAGS:
                api.unpause(dag_id)
            sent = wait_drained(seeder, ids, started, timeout, shape)
        runs = len(api.runs("whatsapp_followups"))
    stamps = sorted(sent)
    drain = stamps[-1] - started
    low, high = stamps[len(stamps) // 10], stamps[(len(stamps) * 9) // 10]
    sustained = (len(stamps) * 8 // 10) / (high - low) if high > low else 0.0
    duplicates = seeder.check(events, clients.outbox(stack.control_url("whatsapp")))
    return ShapeResult(shape, count, drain, sustained, duplicates, runs, sampler.totals())


def shape_events(shape: str) -> dict[str, Any]:
    """The ledger documents of a shape's events: an ``_id`` range (their ids start with the
    shape's name), which the stand-in serves from its index; a ``$in`` of 10,000 ids takes it
    minutes under load, on the CPU this benchmark measures."""
    return {"_id": {"$gte": f"{shape}-", "$lt": f"{shape}."}}


def wait_drained(seeder: Seeder, ids: list[str], started: float, timeout: float, shape: str) -> list[float]:
    """Wait until the queue is empty and every event is sent; the send times (epoch seconds).

    Polls the queue's depth (cheap for the SQS stand-in), and reads the ledger only once it is
    empty: a message leaves the queue only after its outcome is in the ledger."""
    deliveries = seeder.db.followup_deliveries
    last_report = started
    while True:
        now = time.time()
        depth = seeder.queue_depth()
        if depth == 0 and deliveries.count_documents({**shape_events(shape), "state": "sent"}) == len(ids):
            break
        if now - started > timeout:
            raise SystemExit(f"[{shape}] not drained after {timeout:.0f} s: {depth} message(s) still queued")
        if now - last_report >= 30:
            print(f"  [{shape}] {now - started:5.0f} s: {depth} of {len(ids)} still queued", flush=True)
            last_report = now
        time.sleep(2)
    rows = deliveries.find(shape_events(shape), projection={"sent_at": 1})
    return [row["sent_at"].timestamp() for row in rows if isinstance(row.get("sent_at"), datetime)]


# -- output -------------------------------------------------------------------------------------


def print_result(result: ShapeResult, path_rate: float) -> None:
    print(
        f"  {result.shape:<9} {result.messages:>6} msgs drained in {result.drain_seconds:7.1f} s = "
        f"{result.rate:6.1f} msg/s (sustained {result.sustained_rate:6.1f}) in {result.runs} run(s); "
        f"duplicates {result.duplicates}; end to end / processing path {result.rate / path_rate:.2f} "
        f"(sustained {result.sustained_rate / path_rate:.2f})",
        flush=True,
    )
    cores = os.cpu_count() or 1
    total = sum(result.cpu.values())
    print(f"    CPU s ({total:.1f} of the {result.drain_seconds * cores:.1f} s {cores} cores had; "
          f"ms per message):", flush=True)  # fmt: skip
    for label, seconds in sorted(result.cpu.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            print(f"      {label:<28} {seconds:8.1f} s  {seconds / result.messages * 1000:7.2f} ms", flush=True)
    # What a worker would carry on MWAA, where the stand-ins are AWS's, Atlas's and Meta's: the
    # busiest Airflow process with the tasks it ran (an upper bound for the tasks alone).
    airflow = {k: v for k, v in result.cpu.items() if not k.startswith("stand-in") and k not in ("postgres", "redis")}
    if airflow:
        label, seconds = max(airflow.items(), key=lambda kv: kv[1])
        per_message = seconds / result.messages
        print(f"    busiest Airflow process: {label}, {per_message * 1000:.2f} ms per message with its tasks "
              f"= at least {1 / per_message:.0f} msg/s per vCPU", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--path-events", type=int, default=2_000, help="events of the processing-path phase")
    parser.add_argument("--shapes", default="local,topology")
    from leadflow.followups.budget import DEFAULT_CONCURRENCY

    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--send-rate", type=float, default=80.0, help="Meta's default limit per phone number")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a shape may take to drain")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shape(s) {sorted(unknown)}; choose from {sorted(SHAPES)}")

    # A SIGTERM (a timeout, a kill) must still stop the stand-ins and Airflow it started.
    from devstack.topology import _exit_on_sigterm

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="leadflow-bench-e2e-", dir="/var/tmp"))
    root.chmod(0o755)
    from devstack.airflow_home import airflow_env

    # This process imports Airflow too (the topology's API client); keep it off the real home.
    os.environ.update(airflow_env(root / "bench-airflow"))
    with running_stack(root / "stack", mongo_standalone=True) as stack:
        clients.set_settings(stack.control_url("openai"), latency=OPENAI_LATENCY_S)
        clients.set_settings(stack.control_url("whatsapp"), latency=WHATSAPP_LATENCY_S, pair_rate_limit_seconds=6.0)
        seeder = Seeder(stack)
        load = os.getloadavg()
        print(f"stand-ins: OpenAI {OPENAI_LATENCY_S * 1000:.0f} ms, WhatsApp {WHATSAPP_LATENCY_S * 1000:.0f} ms, "
              f"receipts on; {args.events} events per shape; concurrency {args.concurrency}, send limit "
              f"{args.send_rate:g}/s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)  # fmt: skip
        path = processing_phase(seeder, PATH_LABEL, args.path_events, concurrency=args.concurrency,
                                send_rate=args.send_rate)  # fmt: skip
        print(f"  processing path {path.messages} msgs in {path.seconds:.1f} s = {path.rate:.1f} msg/s", flush=True)
        extra = variables_env(args.concurrency, args.send_rate)
        results = []
        for shape in shapes:
            result = run_shape(shape, seeder, root, args.events, extra, args.timeout)
            results.append(result)
            print_result(result, path.rate)
        print()
        for result in results:
            goal = "met" if result.sustained_rate >= args.send_rate else "NOT met"
            print(f"{result.shape}: {result.rate:.1f} msg/s end to end, {result.sustained_rate:.1f} sustained "
                  f"(goal >= {args.send_rate:g}: {goal}), {result.duplicates} duplicates")  # fmt: skip
        load = os.getloadavg()
        print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
