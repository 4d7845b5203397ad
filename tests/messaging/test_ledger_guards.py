"""The ledger's guarded writes against the MongoDB stand-in, for any document they may meet.

The guards were rewritten so the stand-in finds the document by ``_id`` (a top-level ``$nor`` made
it scan the collection on every write) and the claim and ``pending -> sending`` became one write.
These tests check the promise the guards keep, computed here independently of the ledger's own
helpers: a send is started only from ``pending`` (or from nothing recorded), never for an event
a receipt proved delivered, and by one writer only.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.messaging.ledger import Ledger, NewText

PROVES_DELIVERY = {"sent", "delivered", "read"}
STATES = ["pending", "sending", "sent", "skipped", "dead_lettered", "failed", "unknown_outcome"]
RECEIPT_STATUSES = ["accepted", "sent", "delivered", "read", "failed"]

sends = st.lists(
    st.fixed_dictionaries(
        {"wamid": st.text("abc", min_size=1, max_size=3), "status": st.sampled_from(RECEIPT_STATUSES)}
    ),
    max_size=3,
)
documents = st.fixed_dictionaries(
    {"state": st.sampled_from(STATES), "text": st.sampled_from([None, "stored text"])},
    optional={
        "sends": sends,
        "delivery": st.fixed_dictionaries({"status": st.sampled_from(RECEIPT_STATUSES)}),
    },
)


def proves_delivery(doc: dict[str, Any]) -> bool:
    return any(s["status"] in PROVES_DELIVERY for s in doc.get("sends", [])) or (
        doc.get("delivery", {}).get("status") in PROVES_DELIVERY
    )


@pytest.fixture(scope="module")
def collection(stack: Any) -> Iterator[Any]:
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        name = f"ledger_guards_{uuid.uuid4().hex[:8]}"
        yield client.leadflow[name]
        client.leadflow.drop_collection(name)


def new_event(ledger: Ledger, key: str, text: str = "new text") -> dict[str, Any] | None:
    new = NewText(event_type="inquiry_followup", user_id="u1", text=text, text_source="openai",
                  fallback_reason=None, sqs_message_id=f"m-{uuid.uuid4().hex[:6]}")  # fmt: skip
    return ledger.claim_and_send(key, new)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(st.none(), documents))
def test_a_send_starts_only_from_pending_or_nothing_and_never_after_proof_of_delivery(
    collection: Any, doc: dict[str, Any] | None
) -> None:
    ledger = Ledger(collection)
    for write in ("mark_sending", "claim_and_send"):
        key = uuid.uuid4().hex
        if doc is not None:
            collection.insert_one({"_id": key, **doc, "attempts": 0})
        if write == "mark_sending":
            started = ledger.mark_sending(key)
            may_start = doc is not None and doc["state"] == "pending" and not proves_delivery(doc)
        else:
            started = new_event(ledger, key) is not None
            may_start = doc is None or (doc["state"] == "pending" and doc["text"] and not proves_delivery(doc))
        assert started == bool(may_start), (write, doc)
        after = collection.find_one({"_id": key})
        if started:
            assert (after["state"], after["attempts"]) == ("sending", 1)
            # The first stored text is the one sent.
            assert after["text"] == (doc["text"] if doc is not None else "new text")
        elif doc is not None:
            assert (after["state"], after["attempts"]) == (doc["state"], 0)
        else:
            assert after is None


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_a_resend_or_a_reopening_never_happens_after_proof_of_delivery(collection: Any, doc: dict[str, Any]) -> None:
    ledger = Ledger(collection)
    key = uuid.uuid4().hex
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    collection.insert_one({"_id": key, **doc, "unknown_outcome_at": long_ago, "updated_at": long_ago})
    reclaimed = ledger.reclaim_unknown(key, not_after=datetime.now(UTC)) is not None
    assert reclaimed == (doc["state"] == "unknown_outcome" and not proves_delivery(doc))
    collection.replace_one({"_id": key}, {**doc, "unknown_outcome_at": long_ago, "updated_at": long_ago})
    reopened = ledger.reopen(key, sqs_message_id="m") is not None
    assert reopened == (doc["state"] in ("skipped", "dead_lettered", "failed") and not proves_delivery(doc))


def test_one_writer_wins_when_copies_of_a_new_event_claim_it_at_once(collection: Any) -> None:
    ledger = Ledger(collection)
    for _ in range(10):
        key = uuid.uuid4().hex
        barrier = threading.Barrier(4)
        won: list[dict[str, Any] | None] = []

        def claim(text: str, key: str = key, barrier: threading.Barrier = barrier, won: list[Any] = won) -> None:
            barrier.wait()
            won.append(new_event(ledger, key, text))

        threads = [threading.Thread(target=claim, args=(f"text {n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [doc for doc in won if doc is not None]
        assert len(winners) == 1
        stored = collection.find_one({"_id": key})
        assert (stored["state"], stored["attempts"], stored["text"]) == ("sending", 1, winners[0]["text"])


def test_sent_keeps_a_receipt_that_came_before_the_send_answer_was_recorded(collection: Any) -> None:
    from leadflow.messaging.evidence import record_attempt

    ledger = Ledger(collection)
    early, usual = uuid.uuid4().hex, uuid.uuid4().hex
    for key in (early, usual):
        assert new_event(ledger, key) is not None
    record_attempt(collection, early, "wamid.early", status="delivered", rank=2)
    assert ledger.mark_sent(early, wamid="wamid.early", send_mode="text") is True
    assert ledger.mark_sent(usual, wamid="wamid.usual", send_mode="text") is True
    assert collection.find_one({"_id": early})["sends"] == [{"wamid": "wamid.early", "status": "delivered", "rank": 2}]
    assert collection.find_one({"_id": usual})["sends"] == [{"wamid": "wamid.usual", "status": "accepted", "rank": 0}]
    assert {d["state"] for d in collection.find({"_id": {"$in": [early, usual]}})} == {"sent"}
