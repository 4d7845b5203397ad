"""The plugin is served by Airflow's api-server, and only to users the auth manager lets read the DAGs."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.plugins.conftest import auth, token

ENDPOINTS = ["/leadflow/", "/leadflow/api/overview", "/leadflow/runs/{run}", "/leadflow/api/runs/{run}"]


def _url(path: str, run) -> str:
    return path.format(run=f"{run.dag_id}/{quote(run.run_id, safe='')}")


def test_the_plugin_is_registered_with_its_views(client) -> None:
    plugins = client.get("/api/v2/plugins", headers=auth()).json()["plugins"]
    leadflow = next(p for p in plugins if p["name"] == "leadflow")
    views = {view["name"]: view for view in leadflow["external_views"]}
    assert views["Leadflow"]["destination"] == "nav"
    assert views["Summary"]["destination"] == "dag_run"
    assert views["Summary"]["href"] == "/leadflow/runs/{DAG_ID}/{RUN_ID}"
    assert [app["url_prefix"] for app in leadflow["fastapi_apps"]] == ["/leadflow"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_anonymous_is_refused(client, planner_run, path: str) -> None:
    assert client.get(_url(path, planner_run)).status_code == 401


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_user_without_dag_access_is_refused(client, planner_run, path: str) -> None:
    assert client.get(_url(path, planner_run), headers=auth("no-dags", None)).status_code == 403


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_users_who_may_read_the_dags_get_the_view(client, planner_run, path: str, role: str) -> None:
    response = client.get(_url(path, planner_run), headers=auth(role, role))
    assert response.status_code == 200, response.text


def test_the_ui_session_cookie_is_accepted(client, planner_run) -> None:
    """The views are iframes of the UI: the browser sends the UI's JWT cookie, no header."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    client.cookies.set(COOKIE_NAME_JWT_TOKEN, token("admin", "admin"))
    assert client.get("/leadflow/api/overview").status_code == 200


def test_a_forged_token_is_refused(client) -> None:
    forged = token("admin", "admin")[:-4] + "AAAA"
    assert client.get("/leadflow/api/overview", headers={"Authorization": f"Bearer {forged}"}).status_code in (
        401,
        403,
    )


def test_a_dag_that_is_not_leadflows_is_not_summarised(client) -> None:
    assert client.get("/leadflow/api/runs/not_a_leadflow_dag/x", headers=auth()).status_code in (403, 404)


def test_an_unknown_run_is_404(client) -> None:
    assert client.get("/leadflow/api/runs/followup_planner/manual__nope", headers=auth()).status_code == 404


def test_the_view_only_reads(client) -> None:
    """No route of the plugin accepts a write; writes go through Airflow's own trigger API."""
    from leadflow_ui.app import app

    methods = {method for route in app.routes if hasattr(route, "methods") for method in route.methods}
    assert methods <= {"GET", "HEAD"}, methods
    assert client.post("/leadflow/api/overview", headers=auth()).status_code == 405
