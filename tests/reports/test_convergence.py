"""Every change reaches the sheets (issue 21): a profile change of a lead who does not chat, a
message written hours late into an old session, an hour with no run, a failed run, integer ids.

Runs go through ``dag.test()``; MongoDB and Sheets are the stand-ins. Each test fails with the
change scan (``leadflow.reports.extract.scan_changes``) or ``record_landed`` taken out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pymongo
import pytest

from tests.helpers import all_spreadsheets, task_states, xcom_value
from tests.reports import fixture
from tests.reports.test_dag import (
    LEADS_TAB,
    LEADS_TITLE,
    SESSION_TITLE,
    refuse_every_write_try,
    refused_writes,
    run_hours,
)


def rows_by_key(stack, title: str, tab: str) -> dict[str, dict]:
    rows = all_spreadsheets(stack)[title][tab]["rows"]
    return {str(row[0]): dict(zip(rows[0], row, strict=False)) for row in rows[1:]}


def update_profile(stack, user, changes: dict) -> None:
    """What the chatbot / CRM must do (README): set ``updated_at`` with every change it makes."""
    with pymongo.MongoClient(stack.mongo_uri) as client:
        client.leadflow.users.update_one({"_id": user}, {"$set": {**changes, "updated_at": datetime.now(UTC)}})


QUIET_HOUR = fixture.ist(20, 18, 0)  # 17:00-18:00: no interaction in its window


def test_a_profile_change_of_a_lead_who_does_not_chat_reaches_leads_and_sessions(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0), fixture.ist(20, 15, 0)])  # S1, S2: Ananya (U1)
    lead = rows_by_key(seeded, LEADS_TITLE, LEADS_TAB)[str(fixture.U1)]
    assert (lead["Visit Status"], lead["Rank"], lead["Visit Scheduled"]) == ("scheduled", "High", "Yes")

    update_profile(
        seeded,
        fixture.U1,
        {"site_visit.status": "completed", "ranking": "Medium", "name": "Ananya S. Sharma"},
    )
    run = dag.test(logical_date=QUIET_HOUR)
    assert run.state == "success", task_states(run)
    landed = xcom_value(run, "finish")["landed"]  # the run summary counts what changed
    assert (landed["changed_users"], landed["changed_interactions"]) == (1, 0)

    lead = rows_by_key(seeded, LEADS_TITLE, LEADS_TAB)[str(fixture.U1)]
    assert (lead["Visit Status"], lead["Rank"], lead["Visit Scheduled"], lead["Name"]) == (
        "completed", "Medium", "No", "Ananya S. Sharma",
    )  # fmt: skip
    assert (lead["Sessions"], lead["Messages"]) == (2, 7)  # recomputed from all her messages
    sessions = rows_by_key(seeded, SESSION_TITLE, "2026-11")
    assert [sessions[s]["Name"] for s in ("S1", "S2")] == ["Ananya S. Sharma"] * 2
    assert set(sessions) == {"S1", "S2"}  # nobody else was touched


def test_a_message_written_hours_late_into_an_old_session_reaches_the_sheet(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0)])
    # Written now, two hours after the 11:00 run: a 10:58 message of S1 (a replayed queue).
    with pymongo.MongoClient(seeded.mongo_uri) as client:
        client.leadflow.interactions.insert_one(
            {"user_id": fixture.U1, "session_id": "S1", "role": "user", "text": "late",
             "timestamp": fixture.ist(20, 10, 58).astimezone(UTC), "intent": "Pricing"}
        )  # fmt: skip
    run_hours(dag, [fixture.ist(20, 13, 0)])  # its window (11:45-13:00) does not reach S1
    s1 = rows_by_key(seeded, SESSION_TITLE, "2026-11")["S1"]
    assert s1["Messages"] == 5
    assert rows_by_key(seeded, LEADS_TITLE, LEADS_TAB)[str(fixture.U1)]["Messages"] == 8  # S1 5, S2 3


def test_hours_with_no_run_are_covered_by_the_next_run(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0)])
    # The 12:00 to 15:00 runs never happen (scheduler outage, paused DAG, catchup off); the
    # chatbot writes on time meanwhile.
    with pymongo.MongoClient(seeded.mongo_uri) as client:
        client.leadflow.interactions.insert_many(
            [{"user_id": fixture.U4, "session_id": "OUTAGE", "role": "user", "text": "hello",
              "timestamp": fixture.ist(20, 12, 30).astimezone(UTC), "intent": "Pricing"},
             {"user_id": fixture.U4, "session_id": "OUTAGE", "role": "assistant", "text": "hi",
              "timestamp": fixture.ist(20, 12, 31).astimezone(UTC), "intent": None}]
        )  # fmt: skip
    run_hours(dag, [fixture.ist(20, 16, 0)])
    assert rows_by_key(seeded, SESSION_TITLE, "2026-11")["OUTAGE"]["Messages"] == 2


def test_a_failed_run_leaves_its_changes_to_the_next_run(dag, seeded) -> None:
    run_hours(dag, [fixture.ist(20, 11, 0)])
    update_profile(seeded, fixture.U1, {"ranking": "Low"})
    refusals = refuse_every_write_try(seeded, dag)  # both write tasks, every try
    failed = dag.test(logical_date=QUIET_HOUR)
    assert failed.state == "failed"
    assert refused_writes(seeded) == refusals
    assert task_states(failed)["record_landed"] == "upstream_failed"
    assert rows_by_key(seeded, LEADS_TITLE, LEADS_TAB)[str(fixture.U1)]["Rank"] == "High"

    run_hours(dag, [fixture.ist(20, 19, 0)])  # another quiet hour
    assert rows_by_key(seeded, LEADS_TITLE, LEADS_TAB)[str(fixture.U1)]["Rank"] == "Low"


@pytest.mark.parametrize("stored", [42, 42.0], ids=["int", "double"])
def test_a_user_id_stored_as_a_number_keeps_its_history_outside_the_window(dag, clean_stack, stored) -> None:
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_one({"_id": 42, "name": "Kavya Rao", "mobile": "9812345678"})
        client.leadflow.interactions.insert_many(
            [  # 10:00-11:00 as stored, 11:00-12:00 as an int again, one message as text
                {"user_id": stored, "session_id": "N1", "role": "user", "text": "hi",
                 "timestamp": fixture.ist(20, 10, 20).astimezone(UTC), "intent": "Pricing"},
                {"user_id": "42", "session_id": "N1", "role": "assistant", "text": "hello",
                 "timestamp": fixture.ist(20, 10, 21).astimezone(UTC), "intent": None},
                {"user_id": 42, "session_id": "N2", "role": "user", "text": "again",
                 "timestamp": fixture.ist(20, 11, 30).astimezone(UTC), "intent": "Site Visit"},
            ]
        )  # fmt: skip
    run_hours(dag, [fixture.ist(20, 11, 0), fixture.ist(20, 12, 0)])
    leads = rows_by_key(clean_stack, LEADS_TITLE, LEADS_TAB)
    assert list(leads) == ["42"]
    assert (leads["42"]["Sessions"], leads["42"]["Messages"], leads["42"]["Name"]) == (2, 3, "Kavya Rao")
    assert leads["42"]["First Interaction"] == pytest.approx(fixture.serial(fixture.ist(20, 10, 20)))
