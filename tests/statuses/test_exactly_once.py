"""Exactly once, with evidence: issue 20's sequence, through the DAGs and the stand-ins.

Meta's app secret is rotated (receipts go to the statuses DLQ as ``bad_signature``); a send's
answer is lost; its one resend after the grace period is ambiguous too, so the event ends
``failed`` with its message in the follow-ups DLQ as ``unknown_outcome``. The operator fixes the
secret and redrives the statuses DLQ: the receipts prove the first attempt reached the buyer.
Then the default follow-ups redrive (every reason) moves the dead-lettered copy back. The buyer
must have exactly one message in the WhatsApp stand-in's outbox.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest

from devstack import clients
from devstack.services import WHATSAPP_APP_SECRET
from tests.followups.support import event
from tests.helpers import xcom_value
from tests.statuses.support import (
    ReceiptsEnv,
    rotate_app_secret,
    run,
    status,
    summary_of,
    whatsapp_connection_with,
)

ROTATED_SECRET = "the-app-secret-after-rotation"
# The grace period over at once: the copy that arrives next is the resend's turn.
NO_GRACE = {"AIRFLOW_VAR_LEADFLOW_FOLLOWUP_UNKNOWN_OUTCOME_GRACE_MINUTES": "0"}


@pytest.fixture
def rotated(env: ReceiptsEnv) -> Iterator[ReceiptsEnv]:
    rotate_app_secret(env, ROTATED_SECRET)
    try:
        yield env
    finally:
        rotate_app_secret(env, WHATSAPP_APP_SECRET)  # the wiring outlives the stand-in's reset


def test_receipts_redriven_after_a_rotated_secret_stop_any_resend_of_a_failed_event(
    followups_dag: Any, statuses_dag: Any, redrive_dag: Any, rotated: ReceiptsEnv
) -> None:
    env = rotated
    user_id, phone = env.add_user("Kavya Nair", wrote_ago=timedelta(hours=1))
    body = event("inquiry_followup", user_id)
    key = body["event_id"]

    with mock.patch.dict(os.environ, NO_GRACE):
        # 1. The send reaches WhatsApp, the answer is lost: unknown_outcome, no resend yet.
        env.enqueue(body)
        clients.inject_faults(env.whatsapp, [{"count": 1, "answer": "drop", "path_contains": "/messages"}])
        run(followups_dag)
        [delivered] = env.outbox()
        assert env.ledger()[key]["state"] == "unknown_outcome"
        # Its receipts, signed with the new secret, are refused while the connection has the old one.
        env.wait_receipts(3)
        refused = summary_of(run(statuses_dag, max_wait_seconds=1))
        assert refused["dead_letter_reasons"] == {"bad_signature": 3}, refused

        # 2. Past the grace period the next copy sends it once more; that answer is ambiguous too
        #    (a gateway timeout before Meta's app saw it: nothing reaches the buyer).
        clients.inject_faults(env.whatsapp, [{"count": 1, "status": 504, "body": "", "path_contains": "/messages"}])
        env.enqueue(body)
        run(followups_dag)
        assert [c["status"] for c in env.send_calls()] == [200, 504]
        # 3. The one resend is used up: failed, and the copy goes to the DLQ as unknown_outcome.
        env.enqueue(body)
        assert summary_of(run(followups_dag), "process_messages")["dead_letter_reasons"] == {"unknown_outcome": 1}
    doc = env.ledger()[key]
    assert (doc["state"], doc["error_code"], doc["unknown_resends"]) == ("failed", "unknown_outcome", 1)

    # 4. The operator puts the new secret in the connection and redrives the refused receipts.
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_WHATSAPP_DEFAULT": whatsapp_connection_with(ROTATED_SECRET)}):
        moved = redrive_dag.test(
            run_conf={"queue": "statuses", "reasons": ["bad_signature"], "dry_run": False, "max_messages": 10}
        )
        assert xcom_value(moved, "redrive")["moved"] == 3
        applied = summary_of(run(statuses_dag, max_wait_seconds=1))
    assert applied["receipts"] == 3, applied
    after_receipts = env.ledger()[key]

    # 5. The default follow-ups redrive: every reason, for real.
    # (``queue`` spelled out: dag.test() of one DAG object keeps the previous run's conf.)
    moved = redrive_dag.test(run_conf={"queue": "followups", "reasons": [], "dry_run": False, "max_messages": 100})
    assert xcom_value(moved, "redrive")["moved_by_reason"] == {"unknown_outcome": 1}
    summary = summary_of(run(followups_dag), "process_messages")
    assert summary["sent"] == 0, summary
    assert summary["duplicates"] >= 1, summary

    assert [m["to"] for m in env.outbox()] == [phone]  # one message, the first attempt's
    assert env.dlq() == []
    # Why: the receipts were evidence, so they made the event sent, whatever the follow-ups had
    # concluded, and tied the wamid of the attempt that reached the buyer to it.
    doc = after_receipts
    assert (doc["state"], doc["confirmed_by"], doc["wamid"]) == ("sent", "receipt", delivered["wamid"])
    assert doc["delivery"]["status"] == "read"
    assert doc["history"][-1]["state"] == "failed"
    assert [s["wamid"] for s in doc["sends"]] == [delivered["wamid"]]


def test_a_receipt_of_any_attempt_makes_the_event_sent_from_any_state(statuses_dag: Any, env: ReceiptsEnv) -> None:
    states = ["failed", "dead_lettered", "unknown_outcome", "pending", "sending", "skipped"]
    env.db.followup_deliveries.insert_many(
        [{"_id": f"evt-{state}", "state": state, "reason": "whatever it concluded", "event_type": "inquiry_followup",
          "send_mode": "text"} for state in states]
    )  # fmt: skip
    now = int(time.time())
    env.post_webhook([status(f"wamid.any-{s}", "delivered", now, "919800000002", f"evt-{s}") for s in states])

    summary = summary_of(run(statuses_dag, max_wait_seconds=1))

    assert summary["applied"] == {"confirmed": len(states)}, summary
    ledger = env.ledger()
    for state in states:
        doc = ledger[f"evt-{state}"]
        assert (doc["state"], doc["confirmed_by"], doc["wamid"]) == ("sent", "receipt", f"wamid.any-{state}"), state
        assert "reason" not in doc
        assert doc["history"][-1]["state"] == state


def test_a_late_failed_receipt_of_an_older_attempt_never_fails_what_a_newer_attempt_delivered(
    statuses_dag: Any, env: ReceiptsEnv
) -> None:
    # Attempt 1's answer was lost (its wamid unknown to us); attempt 2, after the grace period, was
    # answered 200. Meta then reports attempt 1 failed, before attempt 2's receipts arrive.
    env.db.followup_deliveries.insert_one({
        "_id": "evt-two-attempts", "state": "sent", "wamid": "wamid.second", "unknown_resends": 1,
        "sends": [{"wamid": "wamid.second", "status": "accepted", "rank": 0}], "event_type": "inquiry_followup",
        "send_mode": "text",
    })  # fmt: skip
    now = int(time.time())
    env.post_webhook([status("wamid.first", "failed", now, "919800000002", "evt-two-attempts", code=131026)])
    env.post_webhook([status("wamid.second", "delivered", now + 1, "919800000002", "evt-two-attempts")])

    first = summary_of(run(statuses_dag, max_wait_seconds=1))

    doc = env.ledger()["evt-two-attempts"]
    assert doc["state"] == "sent"
    assert (doc["delivery"]["status"], doc["delivery"]["wamid"]) == ("delivered", "wamid.second")
    assert {s["wamid"]: s["status"] for s in doc["sends"]} == {"wamid.first": "failed", "wamid.second": "delivered"}
    assert first["failed"] == 0, first
    assert env.alerts.read() == []

    # Both attempts ambiguous: a failed of one fails the event until the other's receipt proves it.
    env.db.followup_deliveries.insert_one(
        {"_id": "evt-both-unknown", "state": "unknown_outcome", "event_type": "inquiry_followup", "send_mode": "text"}
    )
    env.post_webhook([status("wamid.one", "failed", now, "919800000002", "evt-both-unknown", code=131026)])
    run(statuses_dag, max_wait_seconds=1)
    assert env.ledger()["evt-both-unknown"]["state"] == "failed"
    env.post_webhook([status("wamid.two", "read", now + 2, "919800000002", "evt-both-unknown")])
    run(statuses_dag, max_wait_seconds=1)
    doc = env.ledger()["evt-both-unknown"]
    assert (doc["state"], doc["wamid"], doc["delivery"]["status"]) == ("sent", "wamid.two", "read")


def test_a_copy_of_an_event_with_delivery_evidence_is_never_sent_whatever_its_state(
    followups_dag: Any, env: ReceiptsEnv
) -> None:
    # Written before receipts settled events (or by a receipt racing the read): failed on the
    # ledger, yet the buyer read it. A redriven copy must settle it, not send it.
    user_id, _ = env.add_user("Rohan Das", wrote_ago=timedelta(hours=1))
    body = event("inquiry_followup", user_id, event_id="evt-read-but-failed")
    env.db.followup_deliveries.insert_one({
        "_id": "evt-read-but-failed", "state": "failed", "reason": "outcome still unknown after a resend",
        "error_code": "unknown_outcome", "text": "Hello again", "user_id": user_id, "event_type": "inquiry_followup",
        "delivery": {"status": "read", "rank": 3, "wamid": "wamid.read-earlier"},
    })  # fmt: skip
    env.enqueue(body)

    summary = summary_of(run(followups_dag), "process_messages")

    assert (summary["sent"], summary["duplicates"]) == (0, 1), summary
    assert env.outbox() == []
    doc = env.ledger()["evt-read-but-failed"]
    assert (doc["state"], doc["confirmed_by"]) == ("sent", "receipt")
    assert doc["history"][-1]["state"] == "failed"
