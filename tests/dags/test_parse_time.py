"""Parse-time budget: a DAG file parses in ≤ 0.3 s with nothing heavy imported (bench.parse_time).

The DAG processor re-parses every file on each loop, on MWAA's 1-vCPU schedulers too. What
makes a parse slow is an import: a provider hook, boto3, google or pandas at module level, or an
``Asset(uri=...)`` whose scheme makes Airflow load every provider's URI handlers (the google
provider's handler imports the GCS hook, the amazon one the S3 hook). The import list is the
exact check; the time limit is CPU seconds with a 3x margin, so the machine's load does not
decide it (``python -m bench.parse_time`` prints the real figures).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.parse_time import BUDGET_S, DAG_FILES, heavy_modules, measure

MARGIN = 3


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_a_dag_file_parses_within_budget_without_heavy_imports(airflow_db, dag_file) -> None:
    figures = measure(dag_file)
    assert figures["errors"] == {}
    assert figures["dags"] == [dag_file.stem]
    assert figures["heavy"] == [], "import these inside the task callables, not at module level"
    assert figures["cpu"] <= BUDGET_S * MARGIN, figures


def test_the_report_clean_up_task_imports_nothing_heavy() -> None:
    # `finish` runs once per report run; pandas and the clients would cost it seconds on a busy
    # worker (leadflow.reports.summary). Only the object store's own client is allowed, and the
    # task loads that when it deletes the run folder, not at import.
    # After airflow.sdk, as in a task process (which has it loaded already).
    probe = (
        "import json, sys; import airflow.sdk; before = set(sys.modules); import leadflow.reports.summary; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert heavy_modules(json.loads(result.stdout)) == []
