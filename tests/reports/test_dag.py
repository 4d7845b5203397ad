"""``interaction_reports`` end to end through ``dag.test()`` against the stand-ins."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from unittest import mock

import pymongo
import pytest

from devstack import clients
from tests.helpers import all_spreadsheets, task_instance, task_states
from tests.reports import fixture

SESSION_TITLE = "Leadflow — Session-wise report"
LEADS_TITLE = "Leadflow — Consolidated report"
LEADS_TAB = "Leads 2026-11"  # every lead of the fixture first chatted in November 2026 (IST)


def wipe_sheets(stack) -> None:
    from airflow.models import Variable

    clients.reset(stack.control_url("sheets"))
    for key in ("leadflow_session_report_spreadsheet_id", "leadflow_consolidated_report_spreadsheet_id"):
        Variable.delete(key)


def run_hours(dag, hours: list[datetime]) -> None:
    for hour in hours:
        run = dag.test(logical_date=hour)
        assert run.state == "success", (hour, task_states(run))


def tries(dag, task_id: str) -> int:
    """How many times the DAG as shipped runs a task before it fails for good."""
    return dag.task_dict[task_id].retries + 1


WRITES = ("write_sessions", "write_consolidated")


def refuse_every_write_try(stack, dag) -> int:
    """Sheets refuses the first batchUpdate of every try of both write tasks, so the run fails
    after the shipped retries; returns how many refusals were queued (all used by that run)."""
    refusals = sum(tries(dag, task_id) for task_id in WRITES)
    refusal = {"count": refusals, "status": 403, "path_contains": ":batchUpdate"}
    clients.inject_faults(stack.control_url("sheets"), [refusal])
    return refusals


def refused_writes(stack) -> int:
    calls = clients.calls(stack.control_url("sheets"))
    return sum(1 for c in calls if ":batchUpdate" in c["path"] and c["status"] == 403)


def test_a_day_of_on_time_runs_gives_the_expected_sheets_and_is_idempotent(dag, seeded) -> None:
    run_hours(dag, fixture.RUN_HOURS)
    on_time = all_spreadsheets(seeded)

    sessions = on_time[SESSION_TITLE]
    assert list(sessions) == ["Dashboard", "2026-11"]  # the dashboard: tests/dashboard
    tab = sessions["2026-11"]
    assert tab["rows"][0] == fixture.SESSION_HEADER
    expected_sessions = fixture.as_sheet_rows(fixture.EXPECTED_SESSIONS)
    assert len(tab["rows"][1:]) == len(expected_sessions)
    for got, want in zip(tab["rows"][1:], expected_sessions, strict=True):
        assert got == pytest.approx(want), got
    assert tab["frozen_rows"] == 1
    assert tab["has_filter"]

    assert list(on_time[LEADS_TITLE]) == ["Dashboard", LEADS_TAB]
    leads = on_time[LEADS_TITLE][LEADS_TAB]
    assert leads["rows"][0] == fixture.CONSOLIDATED_HEADER
    # Lead rows stay where they were first written (new leads appended), not sorted per run.
    expected_leads = sorted(fixture.as_sheet_rows(fixture.EXPECTED_LEADS), key=lambda row: str(row[0]))
    got_leads = sorted(leads["rows"][1:], key=lambda row: str(row[0]))
    for got, want in zip(got_leads, expected_leads, strict=True):
        assert got == pytest.approx(want), got
    assert len(leads["rows"]) == 1 + len(expected_leads)
    # The formula-looking name is stored as text, not as a formula.
    assert fixture.FORMULA_NAME in [row[1] for row in leads["rows"][1:]]

    formats = " ".join(tab["formats"])
    assert '"bold": true' in formats
    assert "yyyy-mm-dd hh:mm" in formats

    # Reverse order, then shuffled with some hours twice: the sheets end up identical (the lead
    # tabs row for row, in the order their rows were first written).
    wipe_sheets(seeded)
    run_hours(dag, list(reversed(fixture.RUN_HOURS)))
    assert lead_rows_in_key_order(all_spreadsheets(seeded)) == lead_rows_in_key_order(on_time)

    wipe_sheets(seeded)
    shuffled = [*fixture.RUN_HOURS, fixture.RUN_HOURS[2], fixture.RUN_HOURS[5], fixture.RUN_HOURS[0]]
    random.Random(7).shuffle(shuffled)
    run_hours(dag, shuffled)
    assert lead_rows_in_key_order(all_spreadsheets(seeded)) == lead_rows_in_key_order(on_time)


def lead_rows_in_key_order(books: dict) -> dict:
    """The spreadsheets with each lead tab's rows sorted by key: lead rows stay in the order they
    were first written, which differs with the order of the runs; everything else must not."""
    leads = {
        title: {**tab, "rows": tab["rows"][:1] + sorted(tab["rows"][1:], key=lambda row: str(row[0]))}
        for title, tab in books[LEADS_TITLE].items()
    }
    return {**books, LEADS_TITLE: leads}


def test_rerun_updates_rows_in_place_and_leaves_other_rows_alone(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0), fixture.ist(20, 15, 0)])  # S1, then S2
    first = all_spreadsheets(seeded)[SESSION_TITLE]["2026-11"]["rows"]
    assert [row[0] for row in first[1:]] == ["S1", "S2"]

    # A late message lands in S1; re-running 11:00 rewrites S1 only, S2 is untouched.
    with pymongo.MongoClient(seeded.mongo_uri) as client:
        client.leadflow.interactions.insert_one(
            {"user_id": fixture.U1, "session_id": "S1", "role": "user", "text": "late",
             "timestamp": fixture.ist(20, 10, 59).astimezone(UTC), "intent": "Pricing"}
        )  # fmt: skip
    run_hours(dag, [fixture.ist(20, 11, 0)])
    after = all_spreadsheets(seeded)[SESSION_TITLE]["2026-11"]["rows"]
    assert len(after) == len(first)
    assert after[1][6] == 5  # Messages of S1
    assert after[2] == first[2]


def test_a_successful_run_raises_no_alert(dag, seeded) -> None:
    from tests.alerts import alert_inbox

    with alert_inbox(seeded) as inbox:
        run_hours(dag, [fixture.ist(20, 11, 0)])
        assert inbox.read() == []


def test_an_hour_with_nothing_touched_skips_the_writes_quietly(dag, seeded) -> None:
    from tests.alerts import alert_inbox

    with alert_inbox(seeded) as inbox:
        run = dag.test(logical_date=fixture.ist(20, 18, 0))  # 17:00-18:00: no interactions
        assert inbox.read() == []  # a quiet hour is not a problem
    assert run.state == "success"
    states = task_states(run)
    assert states["nothing_touched"] == "success"
    assert states["write_sessions"] == "skipped"
    assert states["write_consolidated"] == "skipped"
    assert states["finish"] == "success"
    assert all_spreadsheets(seeded) == {}


def test_a_manual_run_without_logical_date_covers_the_last_completed_hour(dag, clean_stack) -> None:
    now = datetime.now(UTC)
    from leadflow.reports.window import last_completed_hour

    start, _ = last_completed_hour(now)
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.interactions.insert_many(
            [
                {"user_id": fixture.U1, "session_id": "in-window", "role": "user", "text": "hi",
                 "timestamp": start + timedelta(minutes=5), "intent": None},
                {"user_id": fixture.U1, "session_id": "too-old", "role": "user", "text": "hi",
                 "timestamp": start - timedelta(hours=2), "intent": None},
            ]
        )  # fmt: skip
    run = dag.test(logical_date=None)
    assert run.state == "success"
    tabs = all_spreadsheets(clean_stack)[SESSION_TITLE]
    rows = next(tab for title, tab in tabs.items() if title != "Dashboard")["rows"]
    assert [row[0] for row in rows[1:]] == ["in-window"]


def test_sheets_429_then_500_is_retried_and_the_sheets_are_still_right(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0)])
    clients.inject_faults(
        seeded.control_url("sheets"),
        [{"count": 1, "status": 429, "path_contains": ":batchUpdate"},
         {"count": 1, "status": 500, "path_contains": ":batchUpdate"}],
    )  # fmt: skip
    run_hours(dag, [fixture.ist(20, 15, 0)])
    statuses = [c["status"] for c in clients.calls(seeded.control_url("sheets")) if ":batchUpdate" in c["path"]]
    assert 429 in statuses
    assert 500 in statuses
    rows = all_spreadsheets(seeded)[SESSION_TITLE]["2026-11"]["rows"]
    assert [row[0] for row in rows[1:]] == ["S1", "S2"]


def test_mongo_unreachable_fails_with_a_clear_error_after_retries_and_alerts_once(dag, seeded) -> None:
    from tests.alerts import alert_inbox

    dead = json.dumps({"conn_type": "mongo", "host": "127.0.0.1", "port": 9, "schema": "leadflow",
                       "extra": {"serverSelectionTimeoutMS": 300, "connectTimeoutMS": 300}})  # fmt: skip
    # The shipped retries, each after the configured delay (tests/conftest.py: Airflow's 1 s floor).
    with alert_inbox(seeded) as inbox, mock.patch.dict(os.environ, {"AIRFLOW_CONN_MONGO_DEFAULT": dead}):
        run = dag.test(logical_date=fixture.ist(20, 11, 0))
        alerts = inbox.read()
    assert run.state == "failed"
    ti = task_instance(run, "ensure_indexes")  # the first task that needs MongoDB
    assert str(ti.state) == "failed"
    assert ti.try_number == tries(dag, "ensure_indexes") > 1
    assert task_states(run)["extract"] == "upstream_failed"
    assert len(alerts) == 1, alerts  # on the last try only
    assert alerts[0]["task"] == "ensure_indexes"
    assert alerts[0]["error_class"] == "ServerSelectionTimeoutError"
    assert alerts[0]["try_number"] == tries(dag, "ensure_indexes")
    assert alerts[0]["log_url"].startswith("http://localhost:8080/dags/interaction_reports/runs/")
