"""Rows never go backwards, and a user's id stored as ObjectId or as text gives one consolidated row."""

from __future__ import annotations

import json
import os
from datetime import UTC
from unittest import mock

import pymongo
import pytest
from bson import ObjectId

from tests.helpers import all_spreadsheets, task_states
from tests.reports import fixture
from tests.reports.test_dag import (
    LEADS_TAB,
    LEADS_TITLE,
    SESSION_TITLE,
    refuse_every_write_try,
    refused_writes,
    run_hours,
)

H, H1 = fixture.ist(20, 11, 0), fixture.ist(20, 12, 0)


def transform_output(run, task_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


def test_a_late_write_of_an_older_extract_does_not_take_rows_back(dag, seeded) -> None:
    """Extract H, add interactions to one of its sessions, run H+1 to completion, then let H's
    write run: the sheet stays as the on-time runs left it."""
    # H's writes fail (Sheets refuses every try), so its run stops after extract and transform ...
    refusals = refuse_every_write_try(seeded, dag)
    stale_run = dag.test(logical_date=H)
    assert task_states(stale_run)["write_sessions"] == "failed"
    assert refused_writes(seeded) == refusals  # every try refused, none left for the next run
    # ... a late message lands in S1, and H+1 (which covers it) runs to completion.
    with pymongo.MongoClient(seeded.mongo_uri) as client:
        client.leadflow.interactions.insert_one(
            {"user_id": fixture.U1, "session_id": "S1", "role": "user", "text": "one more",
             "timestamp": fixture.ist(20, 11, 10).astimezone(UTC), "intent": "Pricing"}
        )  # fmt: skip
    run_hours(dag, [H1])
    on_time = all_spreadsheets(seeded)
    s1 = next(r for r in on_time[SESSION_TITLE]["2026-11"]["rows"] if r[0] == "S1")
    assert s1[6] == 5  # Messages, with the late one

    # Now H's failed write is cleared and runs, with the frame its own (older) extract made.
    from airflow.models import Variable

    from leadflow.reports.pipeline import load_step

    env = {
        "AIRFLOW_VAR_LEADFLOW_SESSION_REPORT_SPREADSHEET_ID": Variable.get("leadflow_session_report_spreadsheet_id"),
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"api_endpoint": seeded.sheets_url}}
        ),
    }
    with mock.patch.dict(os.environ, env):
        result = load_step("sessions", transform_output(stale_run, "transform_sessions"))
    assert result["rows_kept_newer"] == 1  # S1: the sheet holds a later read
    assert all_spreadsheets(seeded) == on_time


def test_one_user_stored_as_objectid_and_as_text_gives_one_complete_row(dag, clean_stack) -> None:
    user = ObjectId("650000000000000000000042")
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_one({"_id": user, "name": "Meera Nair", "mobile": "9812345678"})
        client.leadflow.interactions.insert_many(
            [  # 10:00-11:00 with the ObjectId, 11:00-12:00 with its hex string
                {"user_id": user, "session_id": "M1", "role": "user", "text": "hi",
                 "timestamp": fixture.ist(20, 10, 20).astimezone(UTC), "intent": "Pricing"},
                {"user_id": user, "session_id": "M1", "role": "assistant", "text": "hello",
                 "timestamp": fixture.ist(20, 10, 21).astimezone(UTC), "intent": None},
                {"user_id": str(user), "session_id": "M2", "role": "user", "text": "again",
                 "timestamp": fixture.ist(20, 11, 30).astimezone(UTC), "intent": "Site Visit"},
            ]
        )  # fmt: skip
    run_hours(dag, [H, H1])
    leads = all_spreadsheets(clean_stack)[LEADS_TITLE][LEADS_TAB]["rows"]
    header = leads[0]
    rows = [dict(zip(header, r, strict=True)) for r in leads[1:]]
    assert [r["User ID"] for r in rows] == [str(user)]
    assert (rows[0]["Sessions"], rows[0]["Messages"], rows[0]["Name"]) == (2, 3, "Meera Nair")
    assert rows[0]["First Interaction"] == pytest.approx(fixture.serial(fixture.ist(20, 10, 20)))
