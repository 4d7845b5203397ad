"""Test helpers that look at the stand-ins through the real clients (no mocks of our code)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack import clients

REPO = Path(__file__).resolve().parent.parent
# Every DAG the project ships (the DagBag, the dags/ folder and the MWAA bundle must agree).
EXPECTED_DAG_IDS = {
    "interaction_reports",
    "interaction_reports_freshness",
    "whatsapp_followups",
    "whatsapp_reminders",
    "followups_redrive",
    "followup_planner",
    "whatsapp_statuses",
}


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)  # exactly as the DAG file builds it


def run_dag(dag, logical_date: datetime | None):
    return dag.test(logical_date=logical_date)


def task_states(run) -> dict[str, str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        fresh = session.query(DagRun).filter(DagRun.run_id == run.run_id, DagRun.dag_id == run.dag_id).one()
        return {ti.task_id: str(ti.state) for ti in fresh.get_task_instances(session=session)}


def task_instance(run, task_id: str):
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.run_id == run.run_id, TaskInstance.dag_id == run.dag_id)
            .filter(TaskInstance.task_id == task_id)
            .one()
        )
        session.expunge(ti)
        return ti


def xcom_value(run: Any, task_id: str) -> Any:
    """The return value a task of ``run`` pushed to XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == run.run_id, XComModel.dag_id == run.dag_id)
            .filter(XComModel.task_id == task_id, XComModel.key == "return_value")
            .one()
        )
        return row.value


def sheets_service(stack):
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build

    return build(
        "sheets",
        "v4",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.sheets_url},
        cache_discovery=False,
    )


def read_spreadsheet(stack, spreadsheet_id: str, drop: tuple[str, ...] = ("Updated",)) -> dict[str, Any]:
    """Every tab's values (unformatted, padded to the header width), frozen rows, filter, formats.

    The columns named in ``drop`` are left out: ``Updated`` holds when a run read its data, which
    differs between two runs that otherwise write the same rows (read it with ``drop=()``)."""
    service = sheets_service(stack)
    meta = service.spreadsheets().get(spreadsheetId=spreadsheet_id).execute()
    titles = [s["properties"]["title"] for s in meta["sheets"]]
    values = (
        service.spreadsheets()
        .values()
        .batchGet(
            spreadsheetId=spreadsheet_id, ranges=[f"'{t}'" for t in titles], valueRenderOption="UNFORMATTED_VALUE"
        )
        .execute()
    )
    state = clients.spreadsheet_state(stack.control_url("sheets"), spreadsheet_id)
    formats = {s["properties"]["title"]: s.get("formats", []) for s in state["sheets"]}
    tabs = {}
    for sheet, value_range in zip(meta["sheets"], values["valueRanges"], strict=True):
        rows = value_range.get("values", [])
        width = len(rows[0]) if rows else 0
        title = sheet["properties"]["title"]
        keep = [i for i in range(width) if rows[0][i] not in drop]
        padded = [row + [""] * (width - len(row)) for row in rows]
        tabs[title] = {
            "index": sheet["properties"].get("index"),
            "rows": [[row[i] for i in keep] + row[width:] for row in padded],
            "frozen_rows": sheet["properties"].get("gridProperties", {}).get("frozenRowCount", 0),
            "has_filter": "basicFilter" in sheet,
            # The stand-in keeps each applied format; re-applying one is a no-op in Sheets.
            "formats": sorted({json.dumps(_without_ids(f), sort_keys=True) for f in formats.get(title, [])}),
        }
    return {"title": meta["properties"]["title"], "tabs": tabs}


def _without_ids(value: Any) -> Any:
    """Sheet ids are random per spreadsheet: drop them so two spreadsheets compare by content."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "sheetId"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def all_spreadsheets(stack, drop: tuple[str, ...] = ("Updated",)) -> dict[str, dict[str, Any]]:
    """Every spreadsheet on the stand-in, keyed by title (ids differ between wipes)."""
    ids = [item["spreadsheetId"] for item in clients.spreadsheet_list(stack.control_url("sheets"))]
    books = [read_spreadsheet(stack, sid, drop) for sid in ids]
    return {book["title"]: book["tabs"] for book in books}


def wait_for(what: str, condition: Callable[[], Any], deadline: float, every: float = 2.0) -> Any:
    """Poll ``condition`` until it returns something truthy (returned) or ``deadline`` (monotonic)
    passes. For tests that drive real Airflow processes, which finish when they finish."""
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
