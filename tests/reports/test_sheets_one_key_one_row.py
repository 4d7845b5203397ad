"""One key, one row, one place: an invariant over generated interleavings of Sheets writes.

Hypothesis interleaves upserts of sessions (new keys, updates, a session whose start moves into
the previous month, an older read arriving late), duplicate rows left by earlier failures (an
old copy in the same tab or in the tab after, as the two-call move of before left them), and
faults injected through the Sheets stand-in (a 429 or 500 on the tab list, the key read or the
write; a write applied whose answer is lost), with the payload limit sometimes small enough to
split a write in several calls. A failed run is retried with the same frame, as Airflow does.

The expected state is computed here, independently of the upsert's helpers: per key, the tab of
the newest version generated and its Messages count (unique per version). After every
successful run each key it wrote is in exactly one row of the spreadsheet, in that tab, with that
row; after a last run that writes one session of every month (so every tab is read once more),
every key ever written is in exactly one row, and nothing else is there.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pytest
import requests
from googleapiclient.errors import HttpError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import clients
from leadflow.reports import sheets, sheets_api
from leadflow.reports.pipeline import SPECS

FOLDER = "local-shared-drive-folder"
MONTHS = ["2026-10", "2026-11", "2026-12"]
KEYS = [f"S{i}" for i in range(6)]
SPEC = SPECS["sessions"]
BASE = pd.Timestamp("2026-12-20T00:00:00Z")

faults = st.sampled_from([
    None,
    {"status": 500, "path_contains": "SHEET"},  # the first call of the run: the tab list
    {"status": 429, "path_contains": "values:batchGet"},  # the key read
    {"status": 500, "path_contains": ":batchUpdate"},  # the (first) write
    {"status": 200, "answer": "drop", "path_contains": ":batchUpdate"},  # applied, answer lost
])  # fmt: skip
runs = st.fixed_dictionaries({
    "kind": st.just("run"),
    # key -> 0: the session's month as the model has it (or a random one for a new key); 1: its
    # start moved into the previous month.
    "keys": st.dictionaries(st.sampled_from(KEYS), st.sampled_from([0, 0, 1]), min_size=1, max_size=4),
    "new_month": st.sampled_from(MONTHS),
    "stale": st.booleans(),  # read an hour before the newest write: must change nothing
    "fault": faults,
    "small_payload": st.booleans(),
})  # fmt: skip
duplicates = st.fixed_dictionaries(
    {"kind": st.just("duplicate"), "key": st.sampled_from(KEYS), "where": st.sampled_from(["same", "after"])}
)


@pytest.fixture
def client(clean_stack):
    conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": clean_stack.sheets_url}})
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
        made = sheets_api.SheetsClient()
        made.num_retries = 0  # every injected fault reaches the upsert: the run fails, then is retried
        yield made


def session_row(key: str, month: str, messages: int, read_at: pd.Timestamp) -> dict:
    start = pd.Timestamp(f"{month}-15T06:00:00Z") + pd.Timedelta(minutes=sum(map(ord, key)))
    return {"Session ID": key, "Name": f"Buyer {key}", "Mobile": "+91987654321", "Session Start": start,
            "Session End": start + pd.Timedelta(minutes=10), "Chat Length (min)": 10, "Messages": messages,
            "Intent Detected": "", "User ID": f"u-{key}", "Updated": read_at}  # fmt: skip


def tab_titles(stack, spreadsheet_id: str) -> set[str]:
    state = clients.spreadsheet_state(stack.control_url("sheets"), spreadsheet_id)
    return {sheet["properties"]["title"] for sheet in state["sheets"]}


def sheet_rows(stack, spreadsheet_id: str) -> list[tuple[str, str, int]]:
    """(tab, key, messages) of every keyed row of every month tab, as the stand-in stores them."""
    state = clients.spreadsheet_state(stack.control_url("sheets"), spreadsheet_id)
    found = []
    for sheet in state["sheets"]:
        title = sheet["properties"]["title"]
        if title in MONTHS:
            header = SPEC.columns
            messages = header.index("Messages")
            found += [(title, r[0], r[messages]) for r in sheet["rows"][1:] if r and r[0]]
    return found


def run_until_it_lands(
    client, stack, spreadsheet_id: str, frame: pd.DataFrame, step: dict, spec=SPEC, index=None
) -> tuple[sheets.UpsertResult, bool]:
    """The upsert with the step's fault queued, retried as a task would be; its result and whether it retried."""
    fault = step["fault"]
    if fault:
        fault_spec = {**fault, "path_contains": fault["path_contains"].replace("SHEET", spreadsheet_id)}
        if fault_spec.get("answer") == "drop":
            fault_spec.pop("status")
        clients.inject_faults(stack.control_url("sheets"), [{"count": 1, **fault_spec}])
    limit = 900 if step["small_payload"] else sheets.MAX_PAYLOAD_BYTES
    with mock.patch.object(sheets, "MAX_PAYLOAD_BYTES", limit):
        for attempt in range(3):
            pending = len(faults_queued(stack))
            try:
                return sheets.upsert(client, spreadsheet_id, frame, spec, index=index), attempt > 0
            except HttpError:
                # A fault for a call a run did not make (no key read on new tabs) waits for the next.
                assert len(faults_queued(stack)) < pending, "only an injected fault may fail a run"
    raise AssertionError("the run never landed")


def faults_queued(stack) -> list[dict]:
    answer = requests.get(f"{stack.control_url('sheets')}/_control/faults", timeout=10)
    answer.raise_for_status()
    return answer.json()["faults"]


def check_written(found: list[tuple[str, str, int]], model: dict[str, tuple[str, int]], keys: set[str]) -> None:
    for key in keys:
        copies = [(tab, messages) for tab, k, messages in found if k == key]
        assert copies == [model[key]], f"{key}: {copies} on the sheet, expected {model[key]}"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(steps=st.lists(st.one_of(runs, runs, duplicates), min_size=1, max_size=7))
def test_every_key_is_in_exactly_one_row_of_one_tab_with_its_newest_data(client, clean_stack, steps) -> None:
    clients.reset(clean_stack.control_url("sheets"))
    clients.set_settings(clean_stack.control_url("sheets"), quota=None)  # examples follow each other fast
    spreadsheet_id = client.create_spreadsheet("invariant", FOLDER)
    model: dict[str, tuple[str, int]] = {}  # key -> (tab, messages) of its newest version
    newest: dict[str, int] = {}  # key -> the hour its newest version was read
    moved_from: dict[str, str] = {}  # a session's start moves into the previous month once at most
    for number, step in enumerate(steps, start=1):
        if step["kind"] == "duplicate":
            key = step["key"]
            if key not in model:
                continue
            # What the two-call move of before left when it failed halfway: the old row in the tab
            # after; or a row pasted twice by hand in the same tab.
            tab = moved_from.get(key) if step["where"] == "after" else model[key][0]
            if tab is None or tab not in tab_titles(clean_stack, spreadsheet_id):
                continue
            old = session_row(key, tab, -number, BASE - pd.Timedelta(days=1))  # an older read
            client.values.append(spreadsheetId=spreadsheet_id, range=f"'{tab}'!A1", valueInputOption="RAW",
                                 body={"values": sheets.frame_rows(pd.DataFrame([old]), SPEC)}).execute()  # fmt: skip
            continue
        read_hour = number - 2 if step["stale"] else number
        rows, expected = [], {}
        for key, move in step["keys"].items():
            month = model[key][0] if key in model else step["new_month"]
            if move and key in model and key not in moved_from and month != MONTHS[0]:
                moved_from[key] = month
                month = MONTHS[MONTHS.index(month) - 1]
            rows.append(session_row(key, month, number, BASE + pd.Timedelta(hours=read_hour)))
            if read_hour >= newest.get(key, -(10**6)):  # a read as new as the sheet's replaces it
                expected[key] = (month, number)
        run_until_it_lands(client, clean_stack, spreadsheet_id, pd.DataFrame(rows), step)
        for key, value in expected.items():
            model[key], newest[key] = value, read_hour
        check_written(sheet_rows(clean_stack, spreadsheet_id), model, set(step["keys"]))

    # One new session in every month, read after everything: every tab is read once more, so
    # every copy left anywhere is found and repaired.
    final = BASE + pd.Timedelta(hours=len(steps) + 1)
    sweep = pd.DataFrame([session_row(f"new-{m}", m, 0, final) for m in MONTHS])
    sheets.upsert(client, spreadsheet_id, sweep, SPEC)
    model.update({f"new-{m}": (m, 0) for m in MONTHS})
    found = sheet_rows(clean_stack, spreadsheet_id)
    assert sorted(k for _, k, _ in found) == sorted(model), "every key exactly once, nothing else"
    check_written(found, model, set(model))
