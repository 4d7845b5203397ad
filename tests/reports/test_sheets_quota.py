"""Google's per-minute Sheets quota, through the real client (googleapiclient) against the stand-in.

``execute(num_retries=...)`` retries a 429 with exponential backoff: a burst over the quota is
absorbed; a quota that does not come back within the retries fails the upsert with Google's error,
and what it left behind is put right by the next run (the upsert is idempotent)."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
import requests
from googleapiclient.errors import HttpError

from devstack import clients
from leadflow.reports import sheets, sheets_api
from leadflow.reports.pipeline import SPECS
from leadflow.reports.row_index import RowIndex
from tests.helpers import read_spreadsheet
from tests.reports.test_sheets_upsert import FOLDER, leads
from tests.reports.test_sheets_upsert import LEADS as LEADS_TAB


def _client(stack, num_retries: int | None = None) -> sheets_api.SheetsClient:
    extra = {"api_endpoint": stack.sheets_url}
    if num_retries is not None:
        extra["num_retries"] = num_retries
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        return sheets_api.SheetsClient()


def _quota(stack, **limits) -> None:
    clients.set_settings(stack.control_url("sheets"), quota=limits or None)


def _quota_state(stack) -> dict:
    return requests.get(f"{stack.control_url('sheets')}/_control/quota", timeout=5).json()


def test_the_standin_enforces_googles_figures_by_default(clean_stack) -> None:
    state = _quota_state(clean_stack)
    assert state["quota"] == {
        "read_per_minute": 300, "read_per_minute_per_user": 60,
        "write_per_minute": 300, "write_per_minute_per_user": 60, "window_seconds": 60,
    }  # fmt: skip
    service = _client(clean_stack, num_retries=0).spreadsheets
    spreadsheet = _client(clean_stack).create_spreadsheet("q", FOLDER)
    for _ in range(59):  # 60 reads a minute per user, the create was a write
        service.get(spreadsheetId=spreadsheet, fields="spreadsheetId").execute()
    service.get(spreadsheetId=spreadsheet, fields="spreadsheetId").execute()
    with pytest.raises(HttpError) as refused:
        service.get(spreadsheetId=spreadsheet, fields="spreadsheetId").execute()
    assert refused.value.resp.status == 429
    body = json.loads(refused.value.content)["error"]
    assert body["status"] == "RESOURCE_EXHAUSTED"
    assert "Read requests per minute per user" in body["message"]
    [info] = [d for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == "RATE_LIMIT_EXCEEDED"
    assert (info["metadata"]["quota_limit"], info["metadata"]["quota_limit_value"]) == (
        "ReadRequestsPerMinutePerUser", "60",
    )  # fmt: skip
    # Writes have their own quota: this one still goes through.
    rename = {"updateSpreadsheetProperties": {"properties": {"title": "q2"}, "fields": "title"}}
    service.batchUpdate(spreadsheetId=spreadsheet, body={"requests": [rename]}).execute()
    assert _quota_state(clean_stack)["refused"] == {"read_per_minute_per_user": 1}


def test_a_burst_over_the_quota_is_absorbed_by_the_clients_backoff(clean_stack, row_index) -> None:
    client = _client(clean_stack)  # the connection's default: 5 retries
    # One write per 2 s: the create, the values (with the new tab) and the layout of a first run
    # cannot all pass, however slowly the machine runs them.
    _quota(clean_stack, write_per_minute_per_user=1, window_seconds=2)
    spreadsheet = client.create_spreadsheet("t", FOLDER)

    result = sheets.upsert(client, spreadsheet, leads(300), SPECS["consolidated"], index=row_index)

    assert (result.rows_added, result.rows_updated) == (300, 0)
    calls = clients.calls(clean_stack.control_url("sheets"))
    refused = [c for c in calls if c["status"] == 429]
    assert refused, "the quota never answered 429: the test proves nothing"
    assert all(c["method"] == "POST" for c in refused)  # reads have their own quota
    assert _quota_state(clean_stack)["refused"]["write_per_minute_per_user"] == len(refused)
    _quota(clean_stack)  # off, to read the result back
    rows = read_spreadsheet(clean_stack, spreadsheet)["tabs"][LEADS_TAB]["rows"]
    assert len(rows) == 301
    assert rows[1][0] == "u00000"


def test_a_quota_that_does_not_recover_fails_the_upsert_and_the_next_run_repairs_it(clean_stack, row_index) -> None:
    client = _client(clean_stack, num_retries=2)
    _quota(clean_stack)  # off while setting up: nothing counted
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    sheets.upsert(client, spreadsheet, leads(300), SPECS["consolidated"], index=row_index)
    reference = client.create_spreadsheet("ref", FOLDER)  # where an uninterrupted second run lands
    # Its own index: one report's keys live in one place, and this is a second copy of them.
    reference_index = RowIndex(row_index.db, "report_rows_reference")
    sheets.upsert(client, reference, leads(300), SPECS["consolidated"], index=reference_index)
    sheets.upsert(client, reference, leads(300, messages=4), SPECS["consolidated"], index=reference_index)
    before = read_spreadsheet(clean_stack, spreadsheet)
    # Two writes left for the hour, and a write sliced in three calls (the header, then the rows
    # in two): the first two go in, the third is refused for good.
    _quota(clean_stack, write_per_minute_per_user=2, window_seconds=3600)

    with pytest.raises(HttpError) as failed, mock.patch.object(sheets, "MAX_PAYLOAD_BYTES", 40_000):
        sheets.upsert(client, spreadsheet, leads(300, messages=4), SPECS["consolidated"], index=row_index)

    assert failed.value.resp.status == 429
    assert "Write requests per minute per user" in str(failed.value)
    refused = [c for c in clients.calls(clean_stack.control_url("sheets")) if c["status"] == 429]
    assert len(refused) == 3  # the try and 2 retries, all of the third values write
    assert {c["path"] for c in refused} == {f"/v4/spreadsheets/{spreadsheet}:batchUpdate"}
    _quota(clean_stack)
    partial = read_spreadsheet(clean_stack, spreadsheet)["tabs"][LEADS_TAB]
    # Each values call is whole (one batchUpdate is atomic): header and keys in place, the rows
    # of the first call new, the others not yet.
    assert partial["rows"][0] == before["tabs"][LEADS_TAB]["rows"][0]
    assert [r[0] for r in partial["rows"]] == [r[0] for r in before["tabs"][LEADS_TAB]["rows"]]
    assert {r[8] for r in partial["rows"][1:]} == {1, 4}

    sheets.upsert(client, spreadsheet, leads(300, messages=4), SPECS["consolidated"], index=row_index)

    assert read_spreadsheet(clean_stack, spreadsheet)["tabs"] == read_spreadsheet(clean_stack, reference)["tabs"]
