"""Parse time of each DAG file, as the DAG processor pays it on every parse loop.

    .venv/bin/python -m bench.parse_time [--repeat 5]

Each measurement is a fresh interpreter that has imported only ``airflow.sdk`` and the DagBag
(what a DAG processor has loaded anyway); the figure is filling a DagBag from that one file:
wall and CPU seconds (best of ``--repeat``) and the heavy modules the parse pulled in. Budget:
0.3 s per file. ``tests/dags/test_parse_time.py`` keeps it with a generous margin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
BUDGET_S = 0.3
# Module prefixes a DAG file must not import at parse time: provider hooks and the SDKs and
# frames behind them belong inside task callables.
HEAVY = (
    "boto3", "botocore", "aiobotocore", "s3fs", "google", "googleapiclient", "gcloud", "grpc",
    "pandas", "numpy", "pymongo", "openai", "phonenumbers", "requests",
)  # fmt: skip
# The standard provider's hooks (package_index, behind @task) are light and cannot be avoided.
LIGHT_PROVIDERS = ("airflow.providers.standard.",)

_PROBE = r"""
import json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
wall, cpu = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "dags": sorted(bag.dag_ids),
                  "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "new_modules": sorted(set(sys.modules) - before)}))
"""


def heavy_modules(modules: list[str]) -> list[str]:
    """The heavy packages (top level) and provider hook modules among ``modules``."""
    found: set[str] = set()
    for name in modules:
        if name.split(".")[0] in HEAVY:
            found.add(name.split(".")[0])
        elif name.startswith("airflow.providers.") and ".hooks." in name and not name.startswith(LIGHT_PROVIDERS):
            found.add(name)
    return sorted(found)


def measure(dag_file: Path, env: dict[str, str] | None = None) -> dict:
    """Parse one DAG file in a fresh interpreter; wall/CPU seconds and the heavy modules it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dag_file)],
        env=env if env is not None else os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing {dag_file.name} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["heavy"] = heavy_modules(figures.pop("new_modules"))
    return figures


def best_of(dag_file: Path, repeat: int, env: dict[str, str] | None = None) -> dict:
    runs = [measure(dag_file, env) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["cpu"])
    return {**best, "wall": min(r["wall"] for r in runs), "cpu": best["cpu"]}


def _local_env() -> dict[str, str]:
    import tempfile

    from devstack.airflow_home import airflow_env

    return {**os.environ, **airflow_env(Path(tempfile.mkdtemp(prefix="leadflow-parse-")))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    env = _local_env()
    print(f"parse time per DAG file (best of {args.repeat}; budget {BUDGET_S:.1f} s)")
    for dag_file in DAG_FILES:
        figures = best_of(dag_file, args.repeat, env)
        verdict = "ok" if figures["wall"] <= BUDGET_S and not figures["heavy"] else "OVER"
        print(
            f"  {dag_file.name:28} wall {figures['wall']:.3f} s  cpu {figures['cpu']:.3f} s  "
            f"heavy imports: {', '.join(figures['heavy']) or 'none'}  [{verdict}]"
        )


if __name__ == "__main__":
    main()
