"""A run's Summary tab shows what its tasks returned, all of it, as a table."""

from __future__ import annotations

import html
from urllib.parse import quote

from tests.helpers import xcom_value
from tests.plugins.conftest import auth


def _paths(run) -> tuple[str, str]:
    tail = f"{run.dag_id}/{quote(run.run_id, safe='')}"
    return f"/leadflow/api/runs/{tail}", f"/leadflow/runs/{tail}"


def test_the_summary_is_the_tasks_return_values(client, planner_run) -> None:
    api, _ = _paths(planner_run)
    summary = client.get(api, headers=auth()).json()
    assert summary["state"] == "success"
    assert summary["tasks"] == {"plan_followups": xcom_value(planner_run, "plan_followups")}


def test_the_tab_has_one_row_per_value(client, planner_run) -> None:
    from leadflow_ui.airflow_state import flatten

    _, page = _paths(planner_run)
    body = client.get(page, headers=auth()).text
    rows = flatten(xcom_value(planner_run, "plan_followups"))
    assert rows, "the planner returns a summary"
    for name, value in rows:
        assert f'id="s-plan_followups-{name}" data-value="{html.escape(value)}"' in body, name
