"""The hourly upsert next to a dashboard: it stays the first tab and costs no call once built."""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pymongo
import pytest

from devstack import clients
from leadflow.reports import dashboard, sheets, sheets_api
from leadflow.reports.pipeline import SPECS
from leadflow.reports.row_index import LEADS_ROW_INDEX, RowIndex
from leadflow.reports.transform import CONSOLIDATED_COLUMNS


def leads(n: int, read_at: str) -> pd.DataFrame:
    last = pd.Timestamp("2026-11-20T05:00:00Z")
    frame = pd.DataFrame({column: [""] * n for column in CONSOLIDATED_COLUMNS})
    frame["User ID"] = [f"u{i:03d}" for i in range(n)]
    frame["Rank"] = ["High", "Low"] * (n // 2)
    frame["Visit Scheduled"] = ["Yes", "No"] * (n // 2)
    frame["Sessions"] = frame["Messages"] = 1
    frame["First Interaction"] = frame["Last Interaction"] = [last - pd.Timedelta(minutes=i) for i in range(n)]
    frame["Updated"] = pd.Timestamp(read_at)
    return frame


@pytest.fixture
def client(clean_stack):
    clients.set_settings(clean_stack.control_url("sheets"), caller="user")
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": clean_stack.sheets_url}})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        yield sheets_api.SheetsClient()


@pytest.fixture
def row_index(clean_stack):
    with pymongo.MongoClient(clean_stack.mongo_uri) as mongo:
        yield RowIndex(mongo.leadflow, LEADS_ROW_INDEX)


def test_the_dashboard_stays_first_and_later_upserts_make_no_dashboard_call(client, clean_stack, row_index) -> None:
    spec = SPECS["consolidated"]
    created = client.spreadsheets.create(
        body={"properties": {"title": "t"}, "sheets": [{"properties": {"title": "Leads 2026-11"}}]}
    ).execute()
    sid = created["spreadsheetId"]
    first = sheets.upsert(client, sid, leads(10, "2026-11-20T05:30:00Z"), spec, index=row_index)
    assert dashboard.ensure_dashboard(client, "consolidated", first, spec)["action"] == "build"

    calls = len(clients.calls(clean_stack.control_url("sheets")))
    second = sheets.upsert(client, sid, leads(12, "2026-11-20T06:30:00Z"), spec, index=row_index)
    assert dashboard.ensure_dashboard(client, "consolidated", second, spec) == {"action": None, "calls": 0}
    assert len(clients.calls(clean_stack.control_url("sheets"))) - calls == second.reads + second.writes

    meta = client.spreadsheets.get(spreadsheetId=sid).execute()
    assert [s["properties"]["title"] for s in meta["sheets"]] == ["Dashboard", "Leads 2026-11"]
    values = client.values.get(spreadsheetId=sid, range="Dashboard!A5:D6", valueRenderOption="UNFORMATTED_VALUE")
    assert values.execute()["values"][1][0] == 12  # the funnel counts the new rows, no call needed
