"""``whatsapp_followups`` failing runs, trigger events, and ``followups_redrive``, through ``dag.test()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from devstack import clients
from tests.followups.support import VISIT_AT, event
from tests.helpers import load_dag, task_states


@pytest.fixture(scope="module")
def redrive_dag(airflow_settings: Any) -> Any:
    return load_dag("followups_redrive")


def _batch_paths(run: Any) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.run_id == run.run_id, XComModel.dag_id == run.dag_id, XComModel.task_id == "receive_messages"
        )
        return [row.value["batch_path"] for row in rows if isinstance(row.value, dict)]


@pytest.mark.parametrize(("code", "status"), [(190, 401), (131042, 400)])
def test_an_account_level_error_mid_batch_fails_the_run_once_and_still_cleans_up(
    followups_dag: Any, env: Any, code: int, status: int
) -> None:
    users = [env.add_user(f"Buyer {n}") for n in range(4)]
    for uid, _ in users:
        env.enqueue(event("inquiry_followup", uid))
    # The first send goes through (a delay-only fault), the next one hits the account error.
    clients.inject_faults(
        env.whatsapp, [{"count": 1, "delay": 0.01}, {"count": 1, "status": status, "error_code": code}]
    )

    run = followups_dag.test(run_conf={"max_wait_seconds": 3})

    states = task_states(run)
    assert run.state == "failed"  # the ALL_DONE clean-up does not mask the failure
    assert states["process_messages"] == "failed"
    assert states["cleanup_batch"] == "success"
    assert states["alert_on_problems"] == "upstream_failed"
    [path] = _batch_paths(run)
    assert not Path(path.removeprefix("file://")).exists()
    # Nothing recorded as failed or dead-lettered; every unsent message is still on the queue.
    sent = len(env.outbox())
    assert sent >= 1
    assert {doc["state"] for doc in env.ledger().values()} <= {"sent", "pending"}
    assert env.dlq() == []
    # ...as fresh copies, held back: a new receive count each, so no outage makes SQS dead-letter them.
    assert env.queue_counts() == (0, 0)
    assert env.delayed() == len(users) - sent
    # One alert, naming the code; the process task was not retried.
    [alert] = env.alerts.read()
    assert alert["task"] == "process_messages"
    assert alert["error_code"] == str(code)
    assert f"code {code}" in alert["_subject"]
    assert alert["try_number"] == 1
    assert alert["requeued"] == len(users) - sent


def test_no_message_body_lands_in_the_metadata_db_or_the_logs(followups_dag: Any, env: Any, capfd, caplog) -> None:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    uid, _ = env.add_user("Lakshmi Rao")
    marker = "https://cdn.example.com/secret-brochure-7f3a9.pdf"
    body = event("cost_sheet_followup", uid, media={"type": "document", "url": marker, "caption": "Tower B"})
    message_id = env.enqueue(body)

    run = followups_dag.test(run_conf={"max_wait_seconds": 3})

    assert run.state == "success"
    assert len(env.outbox()) == 1
    with create_session() as session:
        dumps = {
            table: json.dumps([list(map(str, row)) for row in session.execute(text(query))])
            for table, query in {  # every column: the trigger's kwargs are stored encrypted, under another name
                "trigger": "SELECT * FROM trigger",
                "task_instance": "SELECT * FROM task_instance",
                "task_instance_history": "SELECT * FROM task_instance_history",
                "xcom": "SELECT * FROM xcom",
            }.items()
        }
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    for where, dumped in {**dumps, "logs": logs}.items():
        assert marker not in dumped, where
        assert uid not in dumped, where
        assert "ReceiptHandle" not in dumped, where
    assert message_id in dumps["xcom"]  # the ids do travel: that is what the reference is


def test_redrive_after_fixing_a_phone_number_sends_once_and_a_second_redrive_sends_nothing(
    followups_dag: Any, redrive_dag: Any, env: Any
) -> None:
    bad, _ = env.add_user("Rahul Nair", mobile="12345")
    other, _ = env.add_user("Geeta Iyer")
    env.enqueue(event("inquiry_followup", bad, event_id="evt-redrive"))
    env.enqueue({"event_id": "evt-broken", "event_type": "inquiry_followup", "user_id": other})
    env.enqueue({"event_id": "evt-broken", "event_type": "nonsense", "user_id": other})  # stays in the DLQ
    assert followups_dag.test(run_conf={"max_wait_seconds": 3}).state == "success"
    assert env.ledger()["evt-redrive"]["state"] == "dead_lettered"
    assert len(env.outbox()) == 1  # the valid copy of evt-broken went out; its malformed twin did not block it

    # A dry run moves nothing.
    dry = redrive_dag.test(run_conf={"reasons": ["invalid_phone"], "dry_run": True})
    assert dry.state == "success"
    assert _summary(dry)["moved"] == 1
    assert env.queue_counts() == (0, 0)

    env.db.users.update_one({"_id": ObjectId(bad)}, {"$set": {"mobile": "+91 98333 44455"}})
    moved = redrive_dag.test(run_conf={"reasons": ["invalid_phone"], "dry_run": False, "max_messages": 10})
    summary = _summary(moved)
    assert (summary["moved"], summary["moved_by_reason"]) == (1, {"invalid_phone": 1})
    assert summary["kept_by_reason"] == {"invalid_contract": 1}
    assert summary["moved_event_ids"] == ["evt-redrive"]
    sends_before = len(env.outbox())

    assert followups_dag.test(run_conf={"max_wait_seconds": 3}).state == "success"
    assert [m["to"] for m in env.outbox()[sends_before:]] == ["+919833344455"]
    assert env.ledger()["evt-redrive"]["state"] == "sent"

    # The same message dead-lettered twice (or redriven twice): the second copy is a duplicate.
    env.sqs.send_message(
        QueueUrl=env.stack.dlq_url,
        MessageBody=json.dumps(event("inquiry_followup", bad, event_id="evt-redrive")),
        MessageAttributes={"reason_code": {"DataType": "String", "StringValue": "invalid_phone"}},
    )
    # Every key again: Airflow keeps a run's conf in the DAG object's Params (tests/shipped_dags.py).
    again = {"reasons": ["invalid_phone"], "dry_run": False, "max_messages": 10}
    assert _summary(redrive_dag.test(run_conf=again))["moved"] == 1
    assert followups_dag.test(run_conf={"max_wait_seconds": 3}).state == "success"
    assert len(env.outbox()) == sends_before + 1
    assert [d["reason_code"] for d in env.dlq()] == ["invalid_contract"]  # the other one never moved


def _summary(run: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    assert run.state == "success", task_states(run)
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == run.run_id, XComModel.dag_id == run.dag_id, XComModel.task_id == "redrive")
            .filter(XComModel.key == "return_value")
            .order_by(XComModel.timestamp.desc())
            .first()
        )
        return dict(row.value)


def test_reminders_for_rescheduled_cancelled_and_past_visits_are_skipped_and_the_past_one_alerts(
    followups_dag: Any, env: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    moved, _ = env.add_user("Moved Visit")
    env.db.users.update_one({"_id": ObjectId(moved)}, {"$set": {"site_visit": {
        "scheduled_at": VISIT_AT + timedelta(hours=2), "status": "scheduled"}}})  # fmt: skip
    cancelled, _ = env.add_user("Cancelled Visit")
    env.db.users.update_one({"_id": ObjectId(cancelled)}, {"$set": {"site_visit": {
        "scheduled_at": VISIT_AT, "status": "cancelled"}}})  # fmt: skip
    past, _ = env.add_user("Past Visit")
    for event_id, uid, when in (("evt-moved", moved, VISIT_AT), ("evt-cancelled", cancelled, VISIT_AT),
                                ("evt-past", past, datetime.now(UTC) - timedelta(minutes=5))):  # fmt: skip
        env.enqueue(event("site_visit_reminder", uid, event_id=event_id, scheduled_at=when))

    run = followups_dag.test(run_conf={"max_wait_seconds": 3})

    assert run.state == "success"
    assert env.outbox() == []
    ledger = env.ledger()
    assert {k: (ledger[k]["state"], ledger[k]["reason"]) for k in ("evt-moved", "evt-cancelled", "evt-past")} == {
        "evt-moved": ("skipped", "superseded"),
        "evt-cancelled": ("skipped", "superseded"),
        "evt-past": ("skipped", "expired"),
    }
    assert env.queue_counts() == (0, 0)
    # A moved or cancelled visit needs no reminder; one that missed its visit is never silent.
    [alert] = env.alerts.read()
    assert alert["reminders_expired"] == 1
    assert alert["expired_event_ids"] == ["evt-past"]
    assert alert["_subject"] == "[leadflow] whatsapp_followups: 1 expired reminder(s)"


def test_the_trigger_event_carries_a_reference_and_the_trigger_writes_the_bodies(
    followups_dag: Any, env: Any, tmp_path: Path, caplog, monkeypatch
) -> None:
    """What Airflow stores in ``next_kwargs`` and the triggerer logs is exactly this event."""
    import asyncio
    import logging

    # Outside a task there is no supervisor to ask for connections: the triggerer's env-var route.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": env.stack.sqs_url},
    }))  # fmt: skip

    from leadflow.messaging.trigger import FollowupsSqsTrigger

    uid, _ = env.add_user("Farah Ali")
    marker = "https://cdn.example.com/secret-floor-plan-91c2.pdf"
    message_id = env.enqueue(event("cost_sheet_followup", uid, media={"type": "document", "url": marker}))
    url = f"file://{tmp_path}/batch-1.json"
    trigger = FollowupsSqsTrigger(
        sqs_queue=env.stack.queue_url, aws_conn_id="aws_default", max_messages=10, num_batches=2,
        wait_time_seconds=1, visibility_timeout=60, delete_message_on_reception=False, waiter_delay=1,
        max_wait_seconds=5, batch_url=url,
    )  # fmt: skip

    async def first_event() -> Any:
        async for fired in trigger.run():
            return fired
        return None

    with caplog.at_level(logging.INFO):  # the triggerer's level (botocore's DEBUG dumps every response)
        fired = asyncio.run(first_event())

    dumped = json.dumps({"event": fired.payload, "trigger": trigger.serialize()[1]}, default=str)
    assert fired.payload == {"status": "success", "batch_path": url, "count": 1, "message_ids": [message_id]}
    for secret in (marker, uid, "ReceiptHandle"):
        assert secret not in dumped
        assert secret not in caplog.text
    [stored] = json.loads(Path(url.removeprefix("file://")).read_text())  # the bodies are in the object
    assert marker in stored["Body"]
    assert stored["ReceiptHandle"]
