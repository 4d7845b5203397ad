"""``python -m bench.reports``: the stack, the seed, the children in turn, then the printout."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import bench.reports
from bench.reports.child import REPORTS, Job
from bench.reports.measure import proc_status_mb
from bench.reports.naive import naive
from bench.reports.ours import extract_task, load_task, transform_task
from bench.reports.printout import report
from devstack.seed import SeedSpec, seed_database
from devstack.services import running_stack


def in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def stand_in_memory(stack: Any) -> dict[str, dict[str, float]]:
    return {name: proc_status_mb(stack.pids[name]) for name in ("mongo", "sheets")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reports",
        description=bench.reports.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        # Standalone: the replica-set stand-in's oplog makes each write dearer the more it holds,
        # which would put most of the 1 M seed into the oplog, not into anything measured here.
        with running_stack(tmp / "stack", mongo_standalone=True) as stack:
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



if __name__ == "__main__":
    main()
