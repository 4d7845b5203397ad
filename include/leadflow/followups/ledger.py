"""The delivery ledger: one document per follow-up event in ``followup_deliveries``.

``_id`` is the event's ``event_id`` (the idempotency key). A message that is not even valid
enough to name its event is recorded under ``sqs-message:<SQS MessageId>`` so that every message
received has an outcome here too.

States and transitions (every transition is one atomic, state-guarded MongoDB update)::

    (absent) --claim--> pending --mark_sending--> sending --mark_sent--------> sent
                          ^                          |------release (transient)--> pending
                          |                          |------fail (permanent)-----> failed
    (absent|pending) --finish--> skipped | dead_lettered | failed   (before any send)

Exactly-once, or rather *at most once*, comes from the order of the writes around the HTTP
send, and from what a later copy of the same event does when it finds each state:

1. ``claim``: an upsert that creates the event in ``pending`` and stores the generated text
   (``$setOnInsert``, so a retry or a concurrent copy reuses the first text, never a new one).
2. ``mark_sending``: ``pending -> sending``, atomic and only from ``pending``, immediately before
   the HTTP call. Only one worker can win it, so only one worker can send.
3. The send. After a 2xx: ``sending -> sent`` with the wamid, then the SQS message is deleted.
   After a transient failure that outlasted the retries: ``sending -> pending``, the message is
   left for SQS to redeliver. After a permanent failure: ``sending -> failed`` with the code.

A crash (worker killed, node lost) can happen between any two of these steps:

* before ``mark_sending``: the event is ``pending`` (or absent); the redelivered copy sends it,
  reusing the stored text. Nothing was sent before, so at most one send.
* between ``mark_sending`` and ``mark_sent`` (the request may or may not have reached WhatsApp):
  the redelivered copy finds ``sending``. The outcome is unknown, so it does **not** send again;
  it records ``failed`` with code ``unknown_outcome``, dead-letters the copy and alerts, and a
  human checks the WhatsApp side. (If the original worker was merely slow and later gets its
  2xx, ``mark_sent`` still wins over ``unknown_outcome``: the ledger ends up telling the truth.)
* between ``mark_sent`` and the SQS delete: the redelivered copy finds ``sent``, is counted as a
  duplicate and deleted. Same for the other final states (``skipped``, ``dead_lettered``,
  ``failed``); a final ``dead_lettered``/``failed`` event whose DLQ copy was never confirmed
  (``dlq_message_id`` unset) is dead-lettered again rather than dropped, so nothing is lost.

The residual risk is the one no ledger can remove: a *timeout* on the send itself is classed as
transient by the contract and retried, and the Cloud API has no idempotency key, so if Meta did
accept the timed-out request the user gets the message twice. Connection errors (request never
sent) carry no such risk.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

log = logging.getLogger(__name__)


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"


FINAL_STATES = frozenset({State.SENT, State.SKIPPED, State.DEAD_LETTERED, State.FAILED})
UNKNOWN_OUTCOME = "unknown_outcome"

INDEXES = [
    # Per-user pacing across runs: the latest send to a user.
    IndexModel([("user_id", 1), ("sent_at", DESCENDING)], name="user_sent_at"),
    IndexModel([("state", 1), ("updated_at", DESCENDING)], name="state_updated_at"),
]


def message_key(sqs_message_id: str) -> str:
    """The ledger key of a message that does not name a valid event."""
    return f"sqs-message:{sqs_message_id}"


def _now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """State-guarded writes to ``followup_deliveries`` (see the module docstring)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_indexes(INDEXES)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": key})

    def claim(
        self,
        key: str,
        *,
        event_type: str,
        user_id: str,
        text: str,
        text_source: str,
        fallback_reason: str | None,
        sqs_message_id: str,
        openai_usage: dict[str, Any] | None = None,  # openai_usage hook
    ) -> dict[str, Any]:
        """Create the event in ``pending`` with its text, or return it as it already is."""
        now = _now()
        insert = {
            "event_id": key,
            "event_type": event_type,
            "user_id": user_id,
            "state": State.PENDING.value,
            "text": text,
            "text_source": text_source,
            "fallback_reason": fallback_reason,
            "openai_usage": openai_usage,  # openai_usage hook: tokens of the reply that wrote `text`
            "attempts": 0,
            "created_at": now,
        }
        update = {
            "$setOnInsert": insert,
            "$set": {"updated_at": now},
            "$addToSet": {"sqs_message_ids": sqs_message_id},
        }
        try:
            doc = self.collection.find_one_and_update(
                {"_id": key}, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # two upserts raced; the other one inserted first
            doc = self.collection.find_one_and_update({"_id": key}, update, return_document=ReturnDocument.AFTER)
        assert doc is not None
        return doc

    def mark_sending(self, key: str) -> bool:
        """``pending -> sending``; False if the event is not ``pending`` (someone else has it)."""
        now = _now()
        result = self.collection.update_one(
            {"_id": key, "state": State.PENDING.value},
            {
                "$set": {"state": State.SENDING.value, "sending_at": now, "updated_at": now},
                "$inc": {"attempts": 1},
            },
        )
        return result.modified_count == 1

    def mark_sent(self, key: str, *, wamid: str, send_mode: str) -> bool:
        """``sending -> sent`` (also over an ``unknown_outcome`` a redelivered copy recorded)."""
        now = _now()
        result = self.collection.update_one(
            {"_id": key, "state": {"$in": [State.SENDING.value, State.FAILED.value]}},
            {
                "$set": {
                    "state": State.SENT.value,
                    "wamid": wamid,
                    "send_mode": send_mode,
                    "sent_at": now,
                    "updated_at": now,
                    "error_code": None,
                    "reason": None,
                }
            },
        )
        if result.matched_count != 1:
            log.error("Ledger: event %s was sent (wamid %s) but is no longer in 'sending'", key, wamid)
        return result.matched_count == 1

    def release(self, key: str, *, error_code: str) -> bool:
        """``sending -> pending`` after a transient failure, so a redelivery may try again."""
        result = self.collection.update_one(
            {"_id": key, "state": State.SENDING.value},
            {"$set": {"state": State.PENDING.value, "last_error": error_code, "updated_at": _now()}},
        )
        return result.matched_count == 1

    def fail_send(self, key: str, *, error_code: str, reason: str) -> bool:
        """``sending -> failed`` (a permanent error, or ``unknown_outcome`` on a redelivery)."""
        result = self.collection.update_one(
            {"_id": key, "state": State.SENDING.value},
            {
                "$set": {
                    "state": State.FAILED.value,
                    "error_code": error_code,
                    "reason": reason,
                    "updated_at": _now(),
                }
            },
        )
        return result.matched_count == 1

    def finish(
        self,
        key: str,
        state: State,
        *,
        sqs_message_id: str,
        reason: str | None = None,
        error_code: str | None = None,
        from_pending: bool = True,
        **fields: Any,
    ) -> tuple[bool, dict[str, Any] | None]:
        """Record a final outcome reached before any send: from absent, or from ``pending`` too.

        Returns ``(recorded, document)``; not recorded means the event already had another
        state (e.g. ``sent``), which is left untouched.
        """
        assert state in (State.SKIPPED, State.DEAD_LETTERED, State.FAILED)
        now = _now()
        values = {
            "state": state.value,
            "reason": reason,
            "error_code": error_code,
            "updated_at": now,
            **{k: v for k, v in fields.items() if v is not None},
        }
        update = {
            "$set": values,
            "$setOnInsert": {"created_at": now, "attempts": 0},
            "$addToSet": {"sqs_message_ids": sqs_message_id},
        }
        try:
            doc = self.collection.find_one_and_update(
                {"_id": key, "state": State.PENDING.value if from_pending else "(absent only)"},
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            return True, doc
        except DuplicateKeyError:
            return False, self.get(key)

    def mark_dead_letter_sent(self, key: str, dlq_message_id: str) -> None:
        self.collection.update_one({"_id": key}, {"$set": {"dlq_message_id": dlq_message_id, "updated_at": _now()}})

    def last_sent_by_user(self, user_ids: list[str]) -> dict[str, datetime]:
        """The latest ``sent_at`` of each of ``user_ids`` that was ever sent a message."""
        rows = self.collection.aggregate([
            {"$match": {"user_id": {"$in": user_ids}, "state": State.SENT.value}},
            {"$group": {"_id": "$user_id", "at": {"$max": "$sent_at"}}},
        ])  # fmt: skip
        return {
            row["_id"]: row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=UTC)
            for row in rows
            if isinstance(row.get("at"), datetime)
        }

    def last_sent_at(self, user_id: str) -> datetime | None:
        doc = self.collection.find_one(
            {"user_id": user_id, "state": State.SENT.value},
            projection={"sent_at": 1},
            sort=[("sent_at", DESCENDING)],
        )
        value = (doc or {}).get("sent_at")
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return None
