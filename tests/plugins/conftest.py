"""Airflow's real api-server app (auth manager, plugins from plugins/) over the session's metadata DB.

The app is Airflow's own ``create_app``: the plugin is found in ``[core] plugins_folder`` exactly as
the api-server of ``make run`` finds it. Tokens are minted by the configured auth manager (the
simple auth manager, as ``make run``; MWAA's FAB manager is reached through the same calls).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.run import sync_dags
from tests.helpers import REPO

# Airflow puts the plugins folder on sys.path when it loads plugins; the tests import the package too.
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))


@pytest.fixture(scope="session")
def api_app(airflow_settings) -> Any:
    from airflow.api_fastapi.app import create_app

    sync_dags()
    return create_app()


@pytest.fixture
def client(api_app, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    # What `airflow api-server` sets first thing (airflow/api_fastapi/main.py): connections and
    # Variables are then read from the metadata DB, as in the real api-server.
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    with TestClient(api_app, base_url="http://localhost:8080") as test_client:
        yield test_client


def token(username: str, role: str | None) -> str:
    """A JWT for a user of the simple auth manager: ``role`` None is a user with no permission."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def auth(username: str = "admin", role: str | None = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(username, role)}"}


@pytest.fixture(scope="module")
def planner_run(api_app, stack) -> Any:
    """A real ``followup_planner`` run (``dag.test``): its task's return value is in XCom."""
    from tests.helpers import load_dag

    run = load_dag("followup_planner").test()
    assert run.state == "success"
    return run
