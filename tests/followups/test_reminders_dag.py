"""``whatsapp_reminders``: the reminders' own consumer never waits behind the nudges' backlog."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from tests.followups.support import VISIT_AT, Env, event, run_dag
from tests.helpers import load_dag


def test_a_reminder_goes_out_while_hundreds_of_nudges_wait_on_their_own_queue(env: Env, airflow_settings: Any) -> None:
    reminders = load_dag("whatsapp_reminders")
    nudge_users = [env.add_user(f"Nudged {n}")[0] for n in range(300)]
    for start in range(0, len(nudge_users), 10):
        entries = [
            {"Id": str(n), "MessageBody": json.dumps(event("inquiry_followup", uid))}
            for n, uid in enumerate(nudge_users[start : start + 10])
        ]
        env.sqs.send_message_batch(QueueUrl=env.stack.queue_url, Entries=entries)
    uid, phone = env.add_user("Meera Nair")
    env.db.users.update_one({"_id": ObjectId(uid)}, {"$set": {"site_visit": {"scheduled_at": VISIT_AT,
                                                                               "status": "scheduled"}}})  # fmt: skip
    due = datetime.now(UTC) - timedelta(seconds=5)  # released a moment ago
    body = {**event("site_visit_reminder", uid, event_id="visit-reminder", scheduled_at=VISIT_AT),
            "due_at": due.isoformat()}  # fmt: skip
    env.sqs.send_message(QueueUrl=env.stack.reminders_queue_url, MessageBody=json.dumps(body))

    run_dag(reminders)
    waited = (datetime.now(UTC) - due).total_seconds()

    [message] = env.outbox()
    assert message["to"] == phone
    assert message["biz_opaque_callback_data"] == "visit-reminder"
    doc = env.ledger()["visit-reminder"]
    assert doc["state"] == "sent"
    assert doc["deadline_at"] == due.replace(microsecond=due.microsecond // 1000 * 1000)
    assert 5 <= doc["late_seconds"] <= waited  # late by what it waited since its release
    # Within 2 minutes (the tolerance) nothing to alert; a slow machine may take longer.
    assert len(env.alerts.read()) == (1 if doc["late_seconds"] > 120 else 0)
    assert env.queue_counts(env.stack.reminders_queue_url) == (0, 0)
    assert env.queue_counts() == (300, 0)  # every nudge still waiting for its own consumer


def test_the_redrive_moves_dead_lettered_reminders_back_to_the_reminders_queue(env: Env, airflow_settings: Any) -> None:
    redrive = load_dag("followups_redrive")
    uid, _ = env.add_user("Kabir Rao")
    body = json.dumps(event("site_visit_reminder", uid, event_id="dead-reminder", scheduled_at=VISIT_AT))
    reason = {"reason_code": {"DataType": "String", "StringValue": "invalid_phone"}}
    env.sqs.send_message(QueueUrl=env.stack.reminders_dlq_url, MessageBody=body, MessageAttributes=reason)

    run = redrive.test(run_conf={"queue": "reminders", "reasons": ["invalid_phone"], "dry_run": False})

    assert run.state == "success"
    assert env.dlq(env.stack.reminders_dlq_url) == []
    moved = env.sqs.receive_message(QueueUrl=env.stack.reminders_queue_url, WaitTimeSeconds=0).get("Messages", [])
    assert [m["Body"] for m in moved] == [body]
    assert env.queue_counts() == (0, 0)  # not onto the nudges' queue
