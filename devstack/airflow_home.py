"""A local AIRFLOW_HOME for ``make run``, ``make demo`` and the tests.

Airflow reads its configuration when it is first imported, so callers put :func:`airflow_env`
into ``os.environ`` (or a child's environment) before anything imports ``airflow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_USER = "admin"
LOCAL_PASSWORD = "admin"  # noqa: S105 - the local-only UI login, printed by `make run`
API_PORT = 8080


def airflow_env(home: Path, api_port: int = API_PORT) -> dict[str, str]:
    home = home.resolve()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOCAL_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "leadflow-local-only-secret",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "devstack.sqlite_args.CONNECT_ARGS",
        # Where the UI's log links point; the log alert names it.
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]),
    }


def prepare_home(home: Path, api_port: int = API_PORT) -> dict[str, str]:
    """Create the folder, the login file and a migrated metadata DB; return the environment."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({LOCAL_USER: LOCAL_PASSWORD}))
    env = {**os.environ, **airflow_env(home, api_port)}
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return env
