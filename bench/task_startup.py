"""What a task pays for imports when its Celery worker has (not) preloaded our libraries.

    .venv/bin/python -m bench.task_startup [--repeat 3]

Airflow 3 forks each task from its Celery worker. Each figure is a fresh interpreter that has
imported what a worker's pool process has (``airflow.sdk``, the Celery provider's executor
utilities) and then, timed, the modules one kind of task imports: without the preload, and after
``leadflow.worker_preload`` (which a worker pays once, at start; printed on its own line).
CPU seconds, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

TASKS = {
    "report extract": ["leadflow.reports.pipeline", "leadflow.objectstore", "leadflow.mongo"],
    "report write": [
        "leadflow.reports.pipeline", "leadflow.reports.sheets", "leadflow.objectstore",
        "googleapiclient.discovery", "airflow.providers.google.common.hooks.base_google",
        "airflow.providers.amazon.aws.fs.s3",
    ],
    "follow-up batch": [
        "leadflow.followups.tasks", "leadflow.followups.processor", "openai", "requests",
        "airflow.providers.amazon.aws.hooks.sqs", "airflow.providers.openai.hooks.openai",
    ],
    "receipts batch": [
        "leadflow.statuses.tasks", "leadflow.statuses.processor", "airflow.providers.amazon.aws.hooks.sqs",
    ],
}  # fmt: skip

_PROBE = r"""
import importlib, json, sys, time
import airflow.sdk
import airflow.providers.celery.executors.celery_executor_utils
preload = 0.0
if sys.argv[1] == "1":
    started = time.process_time()
    import leadflow.worker_preload
    preload = time.process_time() - started
started = time.process_time()
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps({"preload": preload, "task": time.process_time() - started}))
"""


def measure(modules: list[str], preloaded: bool) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if preloaded else "0", *modules],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def best(modules: list[str], preloaded: bool, repeat: int) -> dict[str, float]:
    runs = [measure(modules, preloaded) for _ in range(repeat)]
    return min(runs, key=lambda r: r["task"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"import CPU seconds per task, fresh process (best of {args.repeat})")
    preload_cost = []
    for name, modules in TASKS.items():
        cold = best(modules, preloaded=False, repeat=args.repeat)
        warm = best(modules, preloaded=True, repeat=args.repeat)
        preload_cost.append(warm["preload"])
        print(f"  {name:16} without preload {cold['task']:5.2f} s   with preload {warm['task']:5.2f} s")
    print(f"  the preload itself, once per worker start: {min(preload_cost):.2f} s")


if __name__ == "__main__":
    main()
