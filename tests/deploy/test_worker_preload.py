"""The Celery workers' preload (leadflow/worker_preload.py): what it imports, and where it is on.

Each task is a process forked from its Celery worker; a library the worker has not imported,
the task imports itself, every time (seconds of CPU per task: ``python -m bench.task_startup``).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import leadflow
from bench.parse_time import heavy_modules
from devstack.topology import WORKER_PRELOAD, topology_env
from tests.deploy.test_iam_policy import load

TASK_MODULES = sorted(
    module.name for module in pkgutil.walk_packages(leadflow.__path__, "leadflow.") if module.name != WORKER_PRELOAD
)
CELERY_CONFIG = {"imports": [WORKER_PRELOAD]}


def _fresh(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_preloads_every_heavy_library_our_modules_import_and_none_of_our_own_code() -> None:
    # After the preload, importing every module of ours pulls in no heavy library of its own:
    # the tasks find them loaded. And the preload loads no leadflow module: those change with
    # each DAG sync, and a forked task would run the version its worker started with.
    found = _fresh(
        "import json, sys, importlib; import airflow.sdk; import leadflow.worker_preload as p; "
        "ours = sorted(m for m in sys.modules if m.startswith('leadflow.')); before = set(sys.modules); "
        f"[importlib.import_module(m) for m in {TASK_MODULES!r}]; "
        "print(json.dumps({'missing': p.MISSING, 'ours': ours, 'after': sorted(set(sys.modules) - before)}))"
    )
    assert found["missing"] == []
    assert found["ours"] == [WORKER_PRELOAD]
    assert heavy_modules(found["after"]) == []


def test_a_library_that_cannot_be_imported_is_skipped_not_fatal() -> None:
    found = _fresh(
        "import json; from leadflow.worker_preload import preload; "
        "print(json.dumps(preload(('json', 'no_such_library_here'))))"
    )
    assert found == ["no_such_library_here"]


def test_mwaa_and_the_topology_test_both_turn_it_on() -> None:
    mwaa = load("mwaa-airflow-configuration.json")
    assert json.loads(mwaa["celery.extra_celery_config"]) == CELERY_CONFIG
    topology = topology_env(Path("/nonexistent"), api_port=1, db_port=2, redis_port=3, extra={})
    assert json.loads(topology["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"]) == CELERY_CONFIG
