"""The Sheets upsert against the stand-in: call counts, block ranges, payload slicing."""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pytest

from devstack import clients
from leadflow.reports import sheets, sheets_api
from leadflow.reports.pipeline import SPECS
from tests.helpers import all_spreadsheets

FOLDER = "local-shared-drive-folder"  # the Sheets stand-in's shared-drive folder
READ_AT = pd.Timestamp("2026-11-20T05:30:00Z")
LEADS = "Leads 2026-11"  # the month of the leads' first interaction (IST)


def leads(n: int, messages: int = 1, read_at: pd.Timestamp = READ_AT) -> pd.DataFrame:
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
            "Updated": [read_at] * n,
        }
    )


@pytest.fixture
def client(clean_stack):
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": clean_stack.sheets_url}})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        yield sheets_api.SheetsClient()


def test_updates_go_as_block_ranges_in_a_fixed_number_of_calls(client, clean_stack, row_index) -> None:
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    first = sheets.upsert(client, spreadsheet, leads(300), SPECS["consolidated"], index=row_index)
    # A new tab has no keys to read: the tab list; writes: the tab with its rows, then the layout.
    assert (first.rows_added, first.reads, first.writes) == (300, 1, 2), first

    def calls_on_this_spreadsheet() -> list[dict]:
        return [c for c in clients.calls(clean_stack.control_url("sheets")) if spreadsheet in c["path"]]

    before = len(calls_on_this_spreadsheet())
    second = sheets.upsert(client, spreadsheet, leads(300, messages=4), SPECS["consolidated"], index=row_index)
    # reads: tabs, the planned rows' keys (where the row index says they are); writes: values.
    # No key column read, no sort, no layout: the tab is laid out once, when it is made.
    assert (second.rows_updated, second.rows_added, second.reads, second.writes, second.replans,
            second.index_rebuilds) == (300, 0, 2, 1, 0, 0), second  # fmt: skip
    assert second.request_bytes < first.request_bytes * 1.2, second  # not one range per row
    made = calls_on_this_spreadsheet()[before:]
    assert len(made) == 3, [(c["method"], c["path"], c["status"]) for c in made]
    rows = all_spreadsheets(clean_stack)["t"][LEADS]["rows"]
    assert len(rows) == 301
    assert {row[8] for row in rows[1:]} == {4}


def test_a_large_write_is_sliced_below_the_payload_limit_as_sent(client, clean_stack, row_index) -> None:
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    frame = leads(600)
    # googleapiclient sends \u escapes: a Devanagari letter is 6 bytes on the wire, 3 in UTF-8.
    frame["Name"] = [f"खरीदार संजय कुमार शर्मा {i}" for i in range(600)]
    with mock.patch.object(sheets, "MAX_PAYLOAD_BYTES", 20_000):
        result = sheets.upsert(client, spreadsheet, frame, SPECS["consolidated"], index=row_index)
    writes = [c for c in clients.calls(clean_stack.control_url("sheets")) if c["path"].endswith(":batchUpdate")]
    assert len(writes) > 1
    assert max(c["request_bytes"] for c in writes) <= 20_000 * 1.02, [c["request_bytes"] for c in writes]
    assert result.rows_added == 600
    rows = all_spreadsheets(clean_stack)["t"][LEADS]["rows"]
    assert len(rows) == 601
    assert {r[1] for r in rows[1:]} == set(frame["Name"])  # the text arrives as written


def test_a_row_is_never_replaced_by_data_read_earlier(client, clean_stack, row_index) -> None:
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    later = READ_AT + pd.Timedelta(hours=1)
    sheets.upsert(client, spreadsheet, leads(3, messages=5, read_at=later), SPECS["consolidated"], index=row_index)
    # An older snapshot (a cleared 11:00 write after the 12:00 run) arrives last: it is ignored.
    stale = sheets.upsert(client, spreadsheet, leads(3, messages=2), SPECS["consolidated"], index=row_index)
    assert (stale.rows_kept_newer, stale.rows_updated, stale.rows_added) == (3, 0, 0)
    rows = all_spreadsheets(clean_stack, drop=())["t"][LEADS]["rows"]
    assert {row[8] for row in rows[1:]} == {5}
    updated = rows[0].index("Updated")
    assert [row[updated] for row in rows[1:]] == [pytest.approx(sheets.to_serial(later))] * 3
    # Data read at the same time or later replaces the row.
    same = sheets.upsert(
        client, spreadsheet, leads(3, messages=6, read_at=later), SPECS["consolidated"], index=row_index
    )
    assert same.rows_updated == 3
    assert {row[8] for row in all_spreadsheets(clean_stack)["t"][LEADS]["rows"][1:]} == {6}


def test_team_columns_sorts_and_inserted_rows_between_runs_keep_every_note_beside_its_lead(
    client, clean_stack, row_index
) -> None:
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    sheets.upsert(client, spreadsheet, leads(6), SPECS["consolidated"], index=row_index)
    values = client.values
    keys = [r[0] for r in values.get(spreadsheetId=spreadsheet, range=f"'{LEADS}'!A2:A").execute()["values"]]
    meta = client.spreadsheets.get(spreadsheetId=spreadsheet).execute()
    sheet = next(s for s in meta["sheets"] if s["properties"]["title"] == LEADS)
    sheet_id = sheet["properties"]["sheetId"]
    assert sheet["properties"]["gridProperties"]["columnCount"] == len(SPECS["consolidated"].columns)  # sized
    # The team adds a notes column on the right, one note per lead (naming its lead) ...
    client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet, body={"requests": [
        {"appendDimension": {"sheetId": sheet_id, "dimension": "COLUMNS", "length": 2}}]}).execute()  # fmt: skip
    notes = [[f"call {key}"] for key in keys]
    values.update(spreadsheetId=spreadsheet, range=f"'{LEADS}'!N1", valueInputOption="RAW",
                  body={"values": [["Notes"], *notes]}).execute()  # fmt: skip
    # ... sorts by Name (whole rows) and inserts an empty row in the middle, and sets its own filter.
    team_filter = {"range": {"sheetId": sheet_id, "startRowIndex": 0, "startColumnIndex": 0, "endColumnIndex": 3}}
    client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet, body={"requests": [
        {"sortRange": {"range": {"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": 0},
                       "sortSpecs": [{"dimensionIndex": 1, "sortOrder": "DESCENDING"}]}},
        {"insertDimension": {"range": {"sheetId": sheet_id, "dimension": "ROWS", "startIndex": 3, "endIndex": 4}}},
        {"setBasicFilter": {"filter": team_filter}},
    ]}).execute()  # fmt: skip

    result = sheets.upsert(client, spreadsheet, pd.concat([leads(6, messages=3), leads(8).iloc[6:]]),
                           SPECS["consolidated"], index=row_index)  # fmt: skip
    assert (result.rows_updated, result.rows_added) == (6, 2)
    # The re-check found the rows moved: the tab's key column was read once, and counted.
    assert (result.index_rebuilds, result.replans) == (1, 1), result
    state = clients.spreadsheet_state(clean_stack.control_url("sheets"), spreadsheet)
    tab = next(s for s in state["sheets"] if s["properties"]["title"] == LEADS)
    rows = [r for r in tab["rows"][1:] if r and r[0]]
    assert sorted(r[0] for r in rows) == [f"u{i:05d}" for i in range(8)]  # every key once
    for row in rows:
        note = row[13] if len(row) > 13 else None
        assert note in (f"call {row[0]}", None), row  # every note beside its lead
    assert sum(1 for r in rows if len(r) > 13 and r[13]) == 6
    assert tab["basicFilter"]["range"]["endColumnIndex"] == 3  # the team's filter is kept
    protected = tab["protectedRanges"]
    assert len(protected) == 1
    assert protected[0]["warningOnly"] is True


def sessions_in(month_start: str) -> pd.DataFrame:
    start = pd.Timestamp(month_start)
    return pd.DataFrame(
        {
            "Session ID": [f"S-{month_start[:7]}"],
            "Name": ["Buyer"],
            "Mobile": ["+919876543210"],
            "Session Start": [start],
            "Session End": [start + pd.Timedelta(minutes=5)],
            "Chat Length (min)": [5],
            "Messages": [2],
            "Intent Detected": [""],
            "User ID": ["u00001"],
            "Updated": [start + pd.Timedelta(hours=1)],
        }
    )


def test_a_backfilled_month_goes_before_the_later_ones_and_after_the_dashboard(client) -> None:
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    client.name_first_tab(spreadsheet, "2026-12", len(SPECS["sessions"].columns))
    sheets.upsert(client, spreadsheet, sessions_in("2026-12-02T10:00:00Z"), SPECS["sessions"])
    dashboard = {"addSheet": {"properties": {"title": "Dashboard", "index": 0}}}
    client.execute(client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet, body={"requests": [dashboard]}), "writes")
    # A backfill of an earlier month, after the live run made December's tab.
    sheets.upsert(client, spreadsheet, sessions_in("2026-11-20T10:00:00Z"), SPECS["sessions"])

    book = client.spreadsheets.get(spreadsheetId=spreadsheet, fields="sheets.properties").execute()
    titles = [s["properties"]["title"] for s in sorted(book["sheets"], key=lambda s: s["properties"]["index"])]
    assert titles == ["Dashboard", "2026-11", "2026-12"]


def test_a_connection_without_the_drive_scope_is_refused_by_name() -> None:
    extra = {"keyfile_dict": {}, "scope": "https://www.googleapis.com/auth/spreadsheets,"
             "https://www.googleapis.com/auth/drive.file"}  # fmt: skip
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    refused = pytest.raises(ValueError, match=r"must include https://www.googleapis.com/auth/drive \(")
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}), refused:
        sheets_api.SheetsClient()


def test_scattered_updates_and_appends_past_a_full_grid(client, clean_stack, row_index) -> None:
    """A run touching rows spread over a tab whose grid is full: the re-check of hundreds of
    ranges goes as googleapiclient's long-URL POST, and the rows to append lie past the grid's
    edge (Google refuses to read there, so they are not re-checked, and the write grows it)."""
    spreadsheet = client.create_spreadsheet("t", FOLDER)
    sheets.upsert(
        client, spreadsheet, leads(1200), SPECS["consolidated"], index=row_index
    )  # the 1,000-row grid grows to 1,201
    every_other = leads(1200, messages=7, read_at=READ_AT + pd.Timedelta(hours=1)).iloc[::2]
    newcomer = leads(1201, read_at=READ_AT + pd.Timedelta(hours=1)).iloc[[1200]]
    result = sheets.upsert(
        client, spreadsheet, pd.concat([every_other, newcomer]), SPECS["consolidated"], index=row_index
    )
    assert (result.rows_updated, result.rows_added, result.replans) == (600, 1, 0), result
    rows = all_spreadsheets(clean_stack)["t"][LEADS]["rows"][1:]
    assert sorted(r[0] for r in rows) == [f"u{i:05d}" for i in range(1201)]
    assert sum(1 for r in rows if r[8] == 7) == 600
