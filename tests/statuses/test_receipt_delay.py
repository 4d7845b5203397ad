"""The ``delay`` receipt fault: Meta's webhooks can come long after the send was answered.

A delayed receipt must really arrive later (never before its delay), and until it lands the
pipeline must neither invent a delivery nor resend: the event stays as the send left it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from devstack import clients
from tests.followups.support import event
from tests.helpers import wait_for
from tests.statuses.support import run

# Longer than a run of whatsapp_statuses (dag.test() with a 1 s sensor wait takes ~3-5 s here), so
# the delayed receipts cannot land before the run that must not see them has finished.
DELAY_S = 12.0


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _posted(env: Any, wamid: str) -> list[dict[str, Any]]:
    return [r for r in env.receipts_log() if r["wamid"] == wamid and r["outcome"] == "posted"]


def _wait_posted(env: Any, wamid: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DELAY_S + 20
    return wait_for(f"{count} receipts of {wamid}", lambda: len(_posted(env, wamid)) >= count and _posted(env, wamid),
                    deadline, every=0.1)  # fmt: skip


def test_a_delayed_receipt_lands_after_its_delay_and_only_then_moves_the_event_forward(
    followups_dag, statuses_dag, env
) -> None:
    users = [env.add_user(name, wrote_ago=timedelta(hours=1)) for name in ("Dev Menon", "Esha Pillai")]
    events = [event("inquiry_followup", user_id) for user_id, _ in users]
    for body in events:
        env.enqueue(body)
    env.receipt_faults({"action": "delay", "delay": DELAY_S})  # the first accepted send's receipts
    run(followups_dag)
    outbox = {m["wamid"]: m for m in env.outbox()}
    assert len(outbox) == 2
    # Which send took the fault is up to send order: the one whose receipts are still pending.
    prompt = wait_for("one send's 3 receipts", lambda: next(
        (w for w in outbox if len(_posted(env, w)) == 3), None), time.monotonic() + 20, every=0.1)  # fmt: skip
    [delayed] = set(outbox) - {prompt}
    assert _posted(env, delayed) == []
    assert [r for r in env.receipts_log() if r["wamid"] == delayed] == []  # pending, not dropped

    first = run(statuses_dag, max_wait_seconds=1)

    by_wamid = {doc["wamid"]: doc for doc in env.ledger().values()}
    assert by_wamid[prompt]["delivery"]["status"] == "read"
    still = by_wamid[delayed]
    assert still["state"] == "sent"  # Meta said 200: sent, and nothing more is known
    assert "delivery" not in still, still.get("delivery")
    assert _posted(env, delayed) == [], "the delayed receipts landed during the run: raise DELAY_S"
    assert first.state == "success"

    late = _wait_posted(env, delayed, 3)
    received = _at(outbox[delayed]["received_at"])
    assert min(_at(r["at"]) for r in late) - received >= timedelta(seconds=DELAY_S)
    assert [r["status"] for r in late] == ["sent", "delivered", "read"]

    run(statuses_dag, max_wait_seconds=1)

    doc = {d["wamid"]: d for d in env.ledger().values()}[delayed]
    assert (doc["state"], doc["delivery"]["status"], doc["delivery"]["rank"]) == ("sent", "read", 3)
    assert doc["delivery"]["sent_at"] <= doc["delivery"]["delivered_at"] <= doc["delivery"]["read_at"]
    assert len(env.outbox()) == 2
    assert env.statuses_queue_counts() == (0, 0)


def test_an_ambiguous_send_whose_receipt_is_late_is_not_resent_and_is_confirmed_when_it_lands(
    followups_dag, statuses_dag, env
) -> None:
    # WhatsApp applies the send and the answer is lost (unknown_outcome); its receipts come late,
    # but within the grace period: a copy of the event meanwhile must not send it again.
    user_id, phone = env.add_user("Farah Qureshi", wrote_ago=timedelta(hours=1))
    body = event("inquiry_followup", user_id)
    env.enqueue(body)
    clients.inject_faults(env.whatsapp, [{"count": 1, "answer": "drop", "path_contains": "/messages"}])
    env.receipt_faults({"action": "delay", "delay": DELAY_S})
    run(followups_dag)
    [sent] = env.outbox()
    assert env.ledger()[body["event_id"]]["state"] == "unknown_outcome"

    run(statuses_dag, max_wait_seconds=1)
    env.enqueue(body)  # a copy (or the held-back one, redelivered) while the receipt is late
    run(followups_dag)

    doc = env.ledger()[body["event_id"]]
    assert doc["state"] == "unknown_outcome"
    assert "delivery" not in doc
    assert len(env.outbox()) == 1
    assert _posted(env, sent["wamid"]) == [], "the delayed receipts landed too early: raise DELAY_S"

    late = _wait_posted(env, sent["wamid"], 3)
    assert min(_at(r["at"]) for r in late) - _at(sent["received_at"]) >= timedelta(seconds=DELAY_S)
    run(statuses_dag, max_wait_seconds=1)

    doc = env.ledger()[body["event_id"]]
    assert (doc["state"], doc["confirmed_by"], doc["wamid"]) == ("sent", "receipt", sent["wamid"])
    assert doc["delivery"]["status"] == "read"
    assert [m["to"] for m in env.outbox()] == [phone]
