"""The lead tabs' row index: one key, one row, one place, and no tab read whole unless needed.

Hypothesis interleaves upserts of leads into ``Leads YYYY-MM`` tabs (new leads, updates, a lead
whose first interaction moves into the previous month, an older read arriving late) with what
people and failures do to the sheet and the index behind the upsert's back: a tab re-sorted
with the plain sort, a row inserted, a row pasted twice, the MongoDB index lost, and faults
through the Sheets stand-in (a 429 or 500 on the tab list, the re-check read or the write; a
write applied whose answer is lost), sometimes with a payload limit small enough to split a
write. A failed run is retried with the same frame, as Airflow does.

Checked after every successful run, against a model kept here (per key: the tab of its newest
version and its Messages count, unique per version; not the upsert's helpers): each key the run
wrote is in exactly one row of the spreadsheet, in that tab, with that row. And the primary
path: a run that follows a successful run, with nothing done to the sheet or the index since and
no fault of its own, reads no tab whole (``index_rebuilds`` 0). After a last run that appends a
lead to every tab (every tab's next free row is checked), every key ever written is in exactly
one row, and nothing else is there.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pymongo
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devstack import clients
from leadflow.reports import sheets, sheets_api
from leadflow.reports.pipeline import SPECS
from leadflow.reports.row_index import LEADS_ROW_INDEX, TABS, RowIndex
from tests.reports.test_sheets_one_key_one_row import FOLDER, faults, run_until_it_lands

MONTHS = ["2026-10", "2026-11", "2026-12"]
KEYS = [f"u{i}" for i in range(6)]
SPEC = SPECS["consolidated"]
BASE = pd.Timestamp("2026-12-20T00:00:00Z")

runs = st.fixed_dictionaries({
    "kind": st.just("run"),
    # key -> 0: the lead's month as the model has it (or a random one for a new key); 1: its
    # first interaction moved into the previous month.
    "keys": st.dictionaries(st.sampled_from(KEYS), st.sampled_from([0, 0, 1]), min_size=1, max_size=4),
    "new_month": st.sampled_from(MONTHS),
    "stale": st.booleans(),  # read an hour before the newest write: must change nothing
    "fault": faults,
    "small_payload": st.booleans(),
})  # fmt: skip
people = st.fixed_dictionaries({
    "kind": st.sampled_from(["resort", "insert_row", "duplicate", "index_lost"]),
    "key": st.sampled_from(KEYS),
})  # fmt: skip


@pytest.fixture
def client(clean_stack):
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": clean_stack.sheets_url}})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        made = sheets_api.SheetsClient()
        made.num_retries = 0  # every injected fault reaches the upsert: the run fails, then is retried
        yield made


def tab_of(month: str) -> str:
    return f"Leads {month}"


def lead_row(key: str, month: str, messages: int, read_at: pd.Timestamp) -> dict:
    first = pd.Timestamp(f"{month}-15T06:00:00Z") + pd.Timedelta(minutes=sum(map(ord, key)))
    return {"User ID": key, "Name": f"Buyer {key}", "Mobile": "+91987654321", "Config": "3BHK", "Rank": "High",
            "Chat History": "Yes", "Visit Scheduled": "No", "Sessions": 1, "Messages": messages,
            "First Interaction": first, "Last Interaction": first + pd.Timedelta(minutes=10), "Visit Status": "",
            "Updated": read_at}  # fmt: skip


def sheet_rows(stack, spreadsheet_id: str) -> list[tuple[str, str, int]]:
    """(tab, key, messages) of every keyed row of every lead tab, as the stand-in stores them."""
    state = clients.spreadsheet_state(stack.control_url("sheets"), spreadsheet_id)
    messages = SPEC.columns.index("Messages")
    return [
        (sheet["properties"]["title"], r[0], r[messages])
        for sheet in state["sheets"]
        if sheet["properties"]["title"] in {tab_of(m) for m in MONTHS}
        for r in sheet["rows"][1:]
        if r and r[0]
    ]


def sheet_ids(client, spreadsheet_id: str) -> dict[str, int]:
    return {title: tab.sheet_id for title, tab in sheets_api.list_tabs(client, spreadsheet_id).items()}


def disturb(client, db, spreadsheet_id: str, step: dict, model: dict, number: int) -> bool:
    """What people (or a lost database) do between runs; whether anything changed."""
    ids = sheet_ids(client, spreadsheet_id)
    key = step["key"]
    if step["kind"] == "index_lost":
        db[LEADS_ROW_INDEX].drop()
        db[TABS].drop()
        return True
    if key not in model or model[key][0] not in ids:
        return False
    tab = model[key][0]
    if step["kind"] == "duplicate":  # a row pasted a second time below the data, from an older read
        old = lead_row(key, tab[6:], -number, BASE - pd.Timedelta(days=1))
        client.values.append(spreadsheetId=spreadsheet_id, range=f"'{tab}'!A1", valueInputOption="RAW",
                             body={"values": sheets.frame_rows(pd.DataFrame([old]), SPEC)}).execute()  # fmt: skip
        return True
    if step["kind"] == "resort":  # the plain sort (not a filter view), by Name, descending
        request = {"sortRange": {"range": {"sheetId": ids[tab], "startRowIndex": 1, "startColumnIndex": 0},
                                 "sortSpecs": [{"dimensionIndex": 1, "sortOrder": "DESCENDING"}]}}  # fmt: skip
    else:  # an empty row inserted near the top
        request = {"insertDimension": {"range": {"sheetId": ids[tab], "dimension": "ROWS", "startIndex": 1,
                                                 "endIndex": 2}}}  # fmt: skip
    client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body={"requests": [request]}).execute()
    return True


def check_written(found: list[tuple[str, str, int]], model: dict[str, tuple[str, int]], keys: set[str]) -> None:
    for key in keys:
        copies = [(tab, messages) for tab, k, messages in found if k == key]
        assert copies == [model[key]], f"{key}: {copies} on the sheet, expected {model[key]}"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(steps=st.lists(st.one_of(runs, runs, people), min_size=1, max_size=8))
# Always tried: a row pasted below the data, then a run that only updates that lead in place
# (no append to find the pasted row: the re-check of the rows below the data does).
@example(steps=[
    {"kind": "run", "keys": {"u0": 0}, "new_month": "2026-11", "stale": False, "fault": None, "small_payload": False},
    {"kind": "duplicate", "key": "u0"},
    {"kind": "run", "keys": {"u0": 0}, "new_month": "2026-11", "stale": False, "fault": None, "small_payload": False},
])  # fmt: skip
def test_every_lead_is_in_one_row_of_its_tab_and_clean_runs_read_no_tab_whole(client, clean_stack, steps) -> None:
    clients.reset(clean_stack.control_url("sheets"))
    clients.set_settings(clean_stack.control_url("sheets"), quota=None)  # examples follow each other fast
    spreadsheet_id = client.create_spreadsheet("invariant", FOLDER)
    with pymongo.MongoClient(clean_stack.mongo_uri) as mongo:
        db = mongo.leadflow
        db[LEADS_ROW_INDEX].drop()
        db[TABS].drop()
        index = RowIndex(db, LEADS_ROW_INDEX)
        model: dict[str, tuple[str, int]] = {}  # key -> (tab, messages) of its newest version
        newest: dict[str, int] = {}  # key -> the hour its newest version was read
        moved: set[str] = set()  # a lead's first interaction moves into the previous month once at most
        clean = True  # since the last successful run, nothing touched the sheet or the index but us
        for number, step in enumerate(steps, start=1):
            if step["kind"] != "run":
                clean = not disturb(client, db, spreadsheet_id, step, model, number) and clean
                continue
            read_hour = number - 2 if step["stale"] else number
            rows, expected = [], {}
            for key, move in step["keys"].items():
                month = model[key][0][6:] if key in model else step["new_month"]
                if move and key in model and key not in moved and month != MONTHS[0]:
                    moved.add(key)
                    month = MONTHS[MONTHS.index(month) - 1]
                rows.append(lead_row(key, month, number, BASE + pd.Timedelta(hours=read_hour)))
                if read_hour >= newest.get(key, -(10**6)):  # a read as new as the sheet's replaces it
                    expected[key] = (tab_of(month), number)
            result, retried = run_until_it_lands(
                client, clean_stack, spreadsheet_id, pd.DataFrame(rows), step, spec=SPEC, index=index
            )
            if clean and not retried:  # the primary path: the index vouched for every tab
                assert result.index_rebuilds == 0, (step, result)
            clean = not retried
            for key, value in expected.items():
                model[key], newest[key] = value, read_hour
            check_written(sheet_rows(clean_stack, spreadsheet_id), model, set(step["keys"]))

        # A new lead in every month, read after everything: every tab's next free row is checked,
        # so any row pasted or shifted below the data is found and the tab read and repaired.
        final = BASE + pd.Timedelta(hours=len(steps) + 1)
        sweep = pd.DataFrame([lead_row(f"new-{m}", m, 0, final) for m in MONTHS])
        sheets.upsert(client, spreadsheet_id, sweep, SPEC, index=index)
    model.update({f"new-{m}": (tab_of(m), 0) for m in MONTHS})
    found = sheet_rows(clean_stack, spreadsheet_id)
    assert sorted(k for _, k, _ in found) == sorted(model), "every key exactly once, nothing else"
    check_written(found, model, set(model))


def test_a_lead_moving_into_a_month_of_an_earlier_spreadsheet_leaves_the_current_one(client, clean_stack) -> None:
    """After a rollover the lead tabs of older months stay in the earlier spreadsheet. A lead of
    December (current spreadsheet) whose first message turns out to be from November is written
    into November's tab there, and its December row is cleared: one row, one place."""
    from leadflow.reports.pipeline import SPREADSHEET_VARIABLES
    from leadflow.reports.rollover import EARLIER_HEADER, EARLIER_TAB, ROLLOVER_VARIABLES, Destination, write_report

    clients.set_settings(clean_stack.control_url("sheets"), quota=None)
    earlier = client.create_spreadsheet("earlier", FOLDER)
    current = client.create_spreadsheet("current", FOLDER)
    with pymongo.MongoClient(clean_stack.mongo_uri) as mongo:
        index = RowIndex(mongo.leadflow, LEADS_ROW_INDEX)
        sheets.upsert(client, earlier, pd.DataFrame([lead_row("u1", "2026-11", 1, BASE)]), SPEC, index=index)
        sheets.upsert(client, current, pd.DataFrame([lead_row("u2", "2026-12", 1, BASE)]), SPEC, index=index)
        add = {"addSheet": {"properties": {"title": EARLIER_TAB, "index": 0}}}
        client.spreadsheets.batchUpdate(spreadsheetId=current, body={"requests": [add]}).execute()
        listing = {"values": [EARLIER_HEADER, ["earlier", earlier, "link", "then"]]}
        client.values.update(spreadsheetId=current, range=f"'{EARLIER_TAB}'!A1", valueInputOption="RAW",
                             body=listing).execute()  # fmt: skip
        where = Destination("consolidated", SPREADSHEET_VARIABLES["consolidated"], ROLLOVER_VARIABLES["consolidated"],
                            FOLDER, [], "reader")  # fmt: skip
        later = BASE + pd.Timedelta(hours=1)
        moved = pd.DataFrame([lead_row("u2", "2026-11", 2, later)])
        result, _room, into_earlier = write_report(client, SPEC, where, current, moved, index)
    found = sheet_rows(clean_stack, earlier) + sheet_rows(clean_stack, current)
    assert sorted(found) == [("Leads 2026-11", "u1", 1), ("Leads 2026-11", "u2", 2)], found
    assert [k for _, k, _ in sheet_rows(clean_stack, earlier)] == ["u1", "u2"]
    assert into_earlier[earlier]["rows_added"] == 1
    assert result.rows_moved == 1  # cleared from December in the current spreadsheet
