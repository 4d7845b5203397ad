"""The cell-budget rollover of the report spreadsheets, through ``dag.test()`` against the stand-ins.

One session a month (November 2026 to February 2027, the 20th, 10:20 IST) and the 11:00 run of each day:
each month adds a 1000 x 10 tab to the session-wise report. With a budget of 35,000 cells the
first three months fit (Dashboard 3,120 + 3 x 10,000) and February's write rolls over.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pandas as pd
import pymongo
import pytest
from bson import ObjectId

from devstack import clients
from leadflow.reports import sheets, sheets_api
from leadflow.reports.pipeline import SPECS
from leadflow.reports.rollover import EARLIER_HEADER, EARLIER_TAB, ROLLOVER_VARIABLES, VAR_CELL_BUDGET
from tests.helpers import task_instance, task_states
from tests.reports.fixture import IST
from tests.reports.test_dag import LEADS_TITLE, SESSION_TITLE, tries
from tests.reports.test_races import transform_output
from tests.reports.test_sheets_upsert import client  # noqa: F401  (the Sheets client fixture)

SESSION_VAR = "leadflow_session_report_spreadsheet_id"
FOLDER = "local-shared-drive-folder"
USER = ObjectId("650000000000000000000077")
MONTHS = [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]  # the DAG starts on 2026-11-01
BUDGET = 35_000


def month_hour(month: tuple[int, int], hour: int = 11) -> datetime:
    return datetime(*month, 20, hour, 0, tzinfo=IST)


def session_id(month: tuple[int, int]) -> str:
    return f"A{month[0]}{month[1]:02d}"


@pytest.fixture
def months(clean_stack):
    """One session per month in MongoDB; the budget Variable set small, and cleared afterwards."""
    from airflow.models import Variable

    with pymongo.MongoClient(clean_stack.mongo_uri) as mongo:
        mongo.leadflow.users.insert_one({"_id": USER, "name": "Kavya Rao", "mobile": "9812345678"})
        mongo.leadflow.interactions.insert_many(
            [
                # Written long ago (_id time 2024), as if on time: each month is reached by its run's window.
                {"_id": ObjectId(f"660000000000000000aa{n:04d}"), "user_id": USER, "session_id": session_id(m),
                 "role": "user", "text": "hi",
                 "timestamp": month_hour(m, 10).replace(minute=20).astimezone(UTC), "intent": "Pricing"}
                for n, m in enumerate(MONTHS)
            ]
        )  # fmt: skip
    Variable.set(VAR_CELL_BUDGET, str(BUDGET))
    yield clean_stack
    for key in (VAR_CELL_BUDGET, *ROLLOVER_VARIABLES.values()):
        Variable.delete(key)


def run_ok(dag, hour: datetime):
    result = dag.test(logical_date=hour)
    assert result.state == "success", (hour, task_states(result))
    return result


def books(stack) -> dict[str, dict]:
    """Every spreadsheet on the stand-in (id -> stored state: title, tabs, rows, parents, permissions)."""
    url = stack.control_url("sheets")
    return {item["spreadsheetId"]: clients.spreadsheet_state(url, item["spreadsheetId"])
            for item in clients.spreadsheet_list(url)}  # fmt: skip


def tab_rows(book: dict, title: str) -> list[list]:
    sheet = next(s for s in book["sheets"] if s["properties"]["title"] == title)
    return [row for row in sheet["rows"] if row]


def tab_titles(book: dict) -> list[str]:
    return [s["properties"]["title"] for s in book["sheets"]]


def session_keys(all_books: dict[str, dict]) -> list[str]:
    """Every session key in every month tab of every session-wise spreadsheet (duplicates kept)."""
    keys = []
    for book in all_books.values():
        if not book["properties"]["title"].startswith(SESSION_TITLE):
            continue
        for sheet in book["sheets"]:
            if SPECS["sessions"].is_report_tab(sheet["properties"]["title"]):
                keys += [row[0] for row in sheet["rows"][1:] if row and row[0]]
    return keys


def assert_rolled_over(stack, old_id: str) -> dict:
    """The state every rollover must converge to; returns the new spreadsheet."""
    from airflow.models import Variable

    all_books = books(stack)
    titles = sorted(b["properties"]["title"] for b in all_books.values())
    year = 2027  # the year of the month the rollover's write starts the new spreadsheet with
    assert titles == sorted([LEADS_TITLE, SESSION_TITLE, f"{SESSION_TITLE} {year}"])  # no third spreadsheet
    new_id = Variable.get(SESSION_VAR)
    assert new_id != old_id
    old, new = all_books[old_id], all_books[new_id]
    assert new["properties"]["title"] == f"{SESSION_TITLE} {year}"
    assert new["parents"] == [FOLDER]  # created in the shared-drive folder, like the first one
    shared = sorted((p["emailAddress"], p["role"]) for p in new["permissions"])
    assert shared == sorted((p["emailAddress"], p["role"]) for p in old["permissions"]) == [
        ("sales-team@example.com", "reader")
    ]
    earlier = tab_rows(new, EARLIER_TAB)
    assert earlier[0] == EARLIER_HEADER
    assert [row[:3] for row in earlier[1:]] == [[SESSION_TITLE, old_id, f"https://docs.google.com/spreadsheets/d/{old_id}"]]
    # January (the tab before February's) moved with February's write; the old one keeps whole months.
    assert tab_titles(old) == ["Dashboard", "2026-11", "2026-12"]
    assert sorted(tab_titles(new)) == sorted(["Dashboard", EARLIER_TAB, "2027-01", "2027-02"])
    assert sorted(session_keys(all_books)) == [session_id(m) for m in MONTHS]  # every key exactly once
    assert [r[0] for r in tab_rows(new, "2027-01")] == ["Session ID", "A202701"]
    january = next(s for s in new["sheets"] if s["properties"]["title"] == "2027-01")
    assert january["basicFilter"] is not None  # given back after the copy
    assert len(january["protectedRanges"]) == 1
    assert Variable.get(ROLLOVER_VARIABLES["sessions"], default_var=None) is None  # finished
    return new


def test_a_spreadsheet_past_the_budget_rolls_over_and_the_next_run_writes_into_the_new_one(dag, months) -> None:
    from airflow.models import Variable

    for month in MONTHS[:3]:
        run_ok(dag, month_hour(month))
    assert len(books(months)) == 2  # under the budget: no rollover
    old_id = Variable.get(SESSION_VAR)

    rolled = run_ok(dag, month_hour(MONTHS[3]))
    assert_rolled_over(months, old_id)
    summary = transform_output(rolled, "write_sessions")
    assert summary["rollover"]["old_spreadsheet_id"] == old_id
    assert summary["rollover"]["new_spreadsheet_id"] == Variable.get(SESSION_VAR)
    assert summary["rollover"]["cells_before"] == 3_120 + 3 * 10_000
    assert transform_output(rolled, "write_consolidated")["rollover"] is None  # that one is small
    old_dashboard = clients.spreadsheet_state(months.control_url("sheets"), old_id)["sheets"][0]
    assert "2026-12" in json.dumps(old_dashboard["rows"])  # the old dashboard now reads its latest month

    # A later message in February's session: the next run updates it in the new spreadsheet.
    with pymongo.MongoClient(months.mongo_uri) as mongo:
        mongo.leadflow.interactions.insert_one(
            {"user_id": USER, "session_id": "A202702", "role": "assistant", "text": "hello",
             "timestamp": month_hour(MONTHS[3], 10).replace(minute=25).astimezone(UTC), "intent": None}
        )  # fmt: skip
    again = run_ok(dag, month_hour(MONTHS[3]))
    assert transform_output(again, "write_sessions")["rollover"] is None
    new = assert_rolled_over(months, old_id)
    row = tab_rows(new, "2027-02")[1]
    assert (row[0], row[6]) == ("A202702", 2)  # Messages


def test_a_retry_after_failures_mid_rollover_converges_without_duplicates(dag, months) -> None:
    from airflow.models import Variable

    for month in MONTHS[:3]:
        run_ok(dag, month_hour(month))
    old_id = Variable.get(SESSION_VAR)
    url = months.control_url("sheets")
    clients.inject_faults(url, [
        # try 1: the new spreadsheet exists (and is in the Variable), the copy is refused;
        {"count": 1, "status": 400, "path_contains": ":copyTo"},
        # try 2: the copy is made but its answer lost, so the client copies again (two copies);
        # then the delete from the old spreadsheet is refused;
        {"count": 1, "answer": "drop", "path_contains": ":copyTo"},
        {"count": 1, "status": 400, "path_contains": f"{old_id}:batchUpdate"},
    ])  # fmt: skip
    assert tries(dag, "write_sessions") >= 3  # the shipped retries outlast the two failed tries
    rolled = run_ok(dag, month_hour(MONTHS[3]))  # try 3 finishes the rollover and the write

    assert task_instance(rolled, "write_sessions").try_number == 3
    assert_rolled_over(months, old_id)
    calls = clients.calls(url)
    copies = [c["status"] for c in calls if c["path"].endswith(":copyTo")]
    assert copies.count(200) == 2  # the lost answer's retry did copy twice; one copy was deleted
    assert sum(1 for c in calls if c["method"] == "POST" and c["path"].endswith("/files")) == 3  # 2 first + 1 new


def test_a_write_that_passes_the_budget_even_alone_fails_clearly_and_alerts_once(dag, months) -> None:
    from airflow.models import Variable

    from tests.alerts import alert_inbox

    Variable.set(VAR_CELL_BUDGET, "5000")  # less than one month tab (10,000 cells)
    with alert_inbox(months) as inbox:
        failed = dag.test(logical_date=month_hour(MONTHS[0]))
        alerts = inbox.read()
    assert failed.state == "failed"
    assert task_states(failed)["write_sessions"] == "failed"
    assert task_instance(failed, "write_sessions").try_number == tries(dag, "write_sessions") > 1
    session_alerts = [a for a in alerts if a["task"] == "write_sessions"]
    assert len(session_alerts) == 1, alerts  # after the last try only
    assert session_alerts[0]["error_class"] == "CellBudgetExceeded"
    assert sum(1 for b in books(months).values() if b["properties"]["title"].startswith(SESSION_TITLE)) == 1


def test_at_the_default_budget_nothing_rolls_over_and_no_call_is_added(dag, months) -> None:
    from airflow.models import Variable

    Variable.delete(VAR_CELL_BUDGET)
    run_ok(dag, month_hour(MONTHS[0]))
    url = months.control_url("sheets")
    start = len(clients.calls(url))
    second = run_ok(dag, month_hour(MONTHS[1]))
    calls = clients.calls(url)[start:]
    assert transform_output(second, "write_sessions")["rollover"] is None
    assert len(books(months)) == 2
    assert not [c for c in calls if ":copyTo" in c["path"] or c["path"].endswith("/files")]
    for spreadsheet_id in books(months):
        path = f"/v4/spreadsheets/{spreadsheet_id}"
        metadata_reads = [c for c in calls if c["method"] == "GET" and c["path"] == path]
        assert len(metadata_reads) == 1  # the budget check uses the upsert's one tab-list read


def sessions_frame(month: int, n: int, read_at: pd.Timestamp) -> pd.DataFrame:
    start = pd.Timestamp(datetime(2026, month, 10, 10, 0, tzinfo=IST)).tz_convert(UTC)
    return pd.DataFrame(
        {
            "Session ID": [f"S{month:02d}-{i:04d}" for i in range(n)],
            "Name": [f"Buyer {i}" for i in range(n)],
            "Mobile": ["+919876543210"] * n,
            "Session Start": [start + pd.Timedelta(minutes=i) for i in range(n)],
            "Session End": [start + pd.Timedelta(minutes=i + 5) for i in range(n)],
            "Chat Length (min)": [5] * n,
            "Messages": [3] * n,
            "Intent Detected": ["Pricing"] * n,
            "User ID": [f"u{i:05d}" for i in range(n)],
            "Updated": [read_at] * n,
        }
    )


def test_the_upsert_reads_stay_bounded_with_twelve_months_of_tabs(client, clean_stack) -> None:  # noqa: F811
    """One hourly upsert into the latest month costs the same calls and read bytes at 2 and 12 tabs."""
    spec = SPECS["sessions"]
    url = clean_stack.control_url("sheets")
    read_at = pd.Timestamp("2026-12-01T05:30:00Z")

    def call_log() -> list[dict]:
        """The stand-in's log once it holds every call the client made (it logs after answering)."""
        made = sum(client.calls[kind] for kind in ("reads", "writes", "shares"))
        deadline = time.monotonic() + 10
        while len(log := clients.calls(url)) < made and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(log) == made
        return log

    def hourly(spreadsheet_id: str, month: int) -> dict[str, int]:
        start = len(call_log())
        tabs = sheets_api.list_tabs(client, spreadsheet_id)  # the budget check's read, handed to the upsert
        frame = sessions_frame(month, 210, read_at + pd.Timedelta(hours=1))  # 200 updated, 10 new
        result = sheets.upsert(client, spreadsheet_id, frame, spec, tabs=tabs)
        assert (result.rows_updated, result.rows_added) == (200, 10)
        used = call_log()[start:]
        return {"calls": len(used), "request_bytes": sum(c["request_bytes"] for c in used),
                "response_bytes": sum(c["response_bytes"] for c in used),
                "key_read_bytes": sum(c["response_bytes"] for c in used if "values:batchGet" in c["path"]),
                "cells": sum(t.cells for t in sheets_api.list_tabs(client, spreadsheet_id).values())}  # fmt: skip

    figures = {}
    for tab_count in (2, 12):
        spreadsheet_id = client.create_spreadsheet(f"t{tab_count}", FOLDER)
        for month in range(13 - tab_count, 13):  # months of 2026, the latest last
            sheets.upsert(client, spreadsheet_id, sessions_frame(month, 200, read_at), spec)
        figures[tab_count] = hourly(spreadsheet_id, 12)
    print(f"\none hourly upsert (200 rows updated, 10 added) at 2 vs 12 month tabs: {figures}")
    assert figures[12]["calls"] == figures[2]["calls"] == 5  # tab list, keys, re-check, values, layout
    assert abs(figures[12]["request_bytes"] - figures[2]["request_bytes"]) < 100  # sheet ids differ in length
    # Only the tab list grows (~600 bytes a tab: properties, filter, protection); the key reads do not.
    assert figures[12]["key_read_bytes"] == figures[2]["key_read_bytes"]
    assert figures[12]["response_bytes"] - figures[2]["response_bytes"] < 10 * 700
    default_tab = 1_000 * 26  # the test's spreadsheets.create keeps Google's default first tab
    assert figures[12]["cells"] == default_tab + 12 * 1_000 * len(spec.columns)


def test_a_backfill_after_a_rollover_writes_into_the_spreadsheet_that_holds_the_month(dag, months) -> None:
    for month in MONTHS:
        run_ok(dag, month_hour(month))  # February's write rolled over; November stayed in the old one
    old_id = next(sid for sid, b in books(months).items() if b["properties"]["title"] == SESSION_TITLE)
    # A late message in November's session, then November's hour is backfilled.
    with pymongo.MongoClient(months.mongo_uri) as mongo:
        mongo.leadflow.interactions.insert_one(
            {"user_id": USER, "session_id": "A202611", "role": "assistant", "text": "hello",
             "timestamp": month_hour(MONTHS[0], 10).replace(minute=25).astimezone(UTC), "intent": None}
        )  # fmt: skip
    backfill = run_ok(dag, month_hour(MONTHS[0]))
    new = assert_rolled_over(months, old_id)  # no November tab in the new one, every key once
    assert "2026-11" not in tab_titles(new)
    row = tab_rows(books(months)[old_id], "2026-11")[1]
    assert (row[0], row[6]) == ("A202611", 2)  # updated where it is
    written = transform_output(backfill, "write_sessions")
    assert written["earlier_spreadsheets"][old_id]["rows_updated"] == 1


def test_a_session_moving_into_a_month_of_the_old_spreadsheet_leaves_the_new_one(dag, months) -> None:
    for month in MONTHS:
        run_ok(dag, month_hour(month))  # January and February moved to the new spreadsheet
    old_id = next(sid for sid, b in books(months).items() if b["properties"]["title"] == SESSION_TITLE)
    # A late message, written on 31 December, belongs to January's session: it now starts in December.
    late = datetime(2026, 12, 31, 20, 20, tzinfo=IST)
    with pymongo.MongoClient(months.mongo_uri) as mongo:
        mongo.leadflow.interactions.insert_one(
            {"user_id": USER, "session_id": "A202701", "role": "user", "text": "earlier",
             "timestamp": late.astimezone(UTC), "intent": None}
        )  # fmt: skip
    backfill = run_ok(dag, datetime(2026, 12, 31, 21, 0, tzinfo=IST))
    all_books = books(months)
    assert sorted(session_keys(all_books)) == [session_id(m) for m in MONTHS]  # every key exactly once
    assert [r[0] for r in tab_rows(all_books[old_id], "2026-12")[1:]] == ["A202612", "A202701"]
    written = transform_output(backfill, "write_sessions")
    assert written["earlier_spreadsheets"][old_id]["rows_added"] == 1
    assert written["rows_moved"] == 1  # cleared from January in the new spreadsheet
