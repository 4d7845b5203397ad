"""Receipts refused under a rotated Meta app secret are redriven, signature intact, once it is fixed."""

from __future__ import annotations

import os
import time
from typing import Any
from unittest import mock

from tests.helpers import xcom_value
from tests.statuses.support import ReceiptsEnv, run, status, summary_of, whatsapp_connection_with

ROTATED_SECRET = "the-app-secret-after-rotation"


def peek(env: ReceiptsEnv, queue_url: str) -> list[dict[str, str]]:
    """The queue's messages' attributes, left where they are (visible again at once)."""
    messages = env.sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"],
        VisibilityTimeout=0,
    ).get("Messages", [])  # fmt: skip
    return [{k: v["StringValue"] for k, v in (m.get("MessageAttributes") or {}).items()} for m in messages]


def test_webhooks_refused_under_a_rotated_secret_are_applied_after_the_fix_and_a_redrive(
    statuses_dag: Any, redrive_dag: Any, env: ReceiptsEnv
) -> None:
    wamid = "wamid.rotated-secret"
    env.db.followup_deliveries.insert_one(
        {"_id": "evt-rotated", "state": "sent", "wamid": wamid, "event_type": "inquiry_followup", "send_mode": "text"}
    )
    # Meta signs with the app's new secret; the connection still holds the old one.
    delivered = [status(wamid, "delivered", int(time.time()), "919800000002", "evt-rotated")]
    env.post_webhook(delivered, app_secret=ROTATED_SECRET)
    first = summary_of(run(statuses_dag))
    assert first["dead_lettered"] == 1
    [copy] = peek(env, env.stack.statuses_dlq_url)
    assert copy["reason_code"] == "bad_signature"
    assert copy["signature"].startswith("sha256=")  # kept, so the copy can be trusted later

    # The team puts the new secret in the connection, then moves those webhooks back.
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_WHATSAPP_DEFAULT": whatsapp_connection_with(ROTATED_SECRET)}):
        moved = redrive_dag.test(
            run_conf={"queue": "statuses", "reasons": ["bad_signature"], "dry_run": False, "max_messages": 10}
        )
        assert moved.state == "success"
        summary = xcom_value(moved, "redrive")
        assert (summary["queue"], summary["moved"]) == ("statuses", 1), summary
        second = summary_of(run(statuses_dag))

    assert (second["dead_lettered"], second["receipts"]) == (0, 1), second
    assert env.ledger()["evt-rotated"]["delivery"]["status"] == "delivered"
    assert env.statuses_dlq() == []
    assert env.statuses_queue_counts() == (0, 0)
