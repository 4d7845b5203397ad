"""The Sheets upsert against the stand-in: call counts, block ranges, payload slicing."""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pytest

from devstack import clients
from leadflow.reports import sheets
from leadflow.reports.pipeline import SPECS
from tests.helpers import all_spreadsheets


def leads(n: int, messages: int = 1) -> pd.DataFrame:
    last = pd.Timestamp("2026-11-20T05:00:00Z")
    return pd.DataFrame(
        {
            "User ID": [f"u{i:05d}" for i in range(n)],
            "Name": [f"Buyer {i}" for i in range(n)],
            "Mobile": ["+919876543210"] * n,
            "Config": ["3BHK"] * n,
            "Rank": ["High"] * n,
            "Chat History": ["Yes"] * n,
            "Visit Scheduled": ["No"] * n,
            "Sessions": [1] * n,
            "Messages": [messages] * n,
            "First Interaction": [last - pd.Timedelta(hours=1)] * n,
            "Last Interaction": [last - pd.Timedelta(minutes=i) for i in range(n)],
            "Visit Status": [""] * n,
        }
    )


@pytest.fixture
def client(clean_stack):
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": clean_stack.sheets_url}})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        yield sheets.SheetsClient()


def test_updates_go_as_block_ranges_in_a_fixed_number_of_calls(client, clean_stack) -> None:
    spreadsheet = client.create_spreadsheet("t", ["Leads"])
    first = sheets.upsert(client, spreadsheet, leads(300), SPECS["consolidated"])
    assert (first.rows_added, first.reads, first.writes) == (300, 2, 2)

    before = len(clients.calls(clean_stack.control_url("sheets")))
    second = sheets.upsert(client, spreadsheet, leads(300, messages=4), SPECS["consolidated"])
    assert (second.rows_updated, second.rows_added, second.writes) == (300, 0, 2)
    assert second.request_bytes < first.request_bytes * 1.2  # not one range per row
    assert len(clients.calls(clean_stack.control_url("sheets"))) - before == 4
    rows = all_spreadsheets(clean_stack)["t"]["Leads"]["rows"]
    assert len(rows) == 301
    assert {row[8] for row in rows[1:]} == {4}


def test_a_large_write_is_sliced_below_the_payload_limit(client, clean_stack) -> None:
    spreadsheet = client.create_spreadsheet("t", ["Leads"])
    with mock.patch.object(sheets, "MAX_PAYLOAD_BYTES", 20_000):
        result = sheets.upsert(client, spreadsheet, leads(600), SPECS["consolidated"])
    value_writes = [c for c in clients.calls(clean_stack.control_url("sheets")) if "values:batchUpdate" in c["path"]]
    assert len(value_writes) > 1
    assert max(c["request_bytes"] for c in value_writes) < 25_000
    assert result.rows_added == 600
    assert len(all_spreadsheets(clean_stack)["t"]["Leads"]["rows"]) == 601
