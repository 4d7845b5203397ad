"""The delivery ledger: one document per follow-up event in ``followup_deliveries``.

``_id`` is the event's ``event_id`` (the idempotency key). A message that is not even valid
enough to name its event is recorded under ``sqs-message:<SQS MessageId>`` so that every message
received has an outcome here too.

States and transitions (every transition is one atomic, state-guarded MongoDB update)::

    (absent) --claim--> pending --mark_sending--> sending --mark_sent--------------> sent
                          ^                          |------release (proven not sent)--> pending
                          |                          |------fail_send (permanent)-----> failed
                          |                          '------mark_unknown (ambiguous)--> unknown_outcome
                          |--reopen-- skipped | dead_lettered | failed   (the event arrives again)
                          '--reclaim_unknown-- unknown_outcome, once its grace period is over
    (absent|pending) --finish--> skipped | dead_lettered | failed   (before any send)

``sent`` is final: a later copy is a duplicate, deleted. ``unknown_outcome`` (the request may
have reached WhatsApp: read timeout, connection lost after sending, a 5xx that does not prove a
rejection) blocks a resend until ``unknown_outcome_at`` + the grace period (Variable
``leadflow_followup_unknown_outcome_grace_minutes``): a delivery receipt
(:mod:`leadflow.statuses`, matched by ``biz_opaque_callback_data`` = the event id) marks it
``sent`` meanwhile; without one the next delivery of the SQS message sends it once more
(``unknown_resends``), and a second ambiguous answer is failed for a human to check. Every
other state (``skipped``, ``dead_lettered``, ``failed``) is *re-evaluated* when the event arrives
again, so fixing the cause and redriving the DLQ copy sends it exactly once.

At most once comes from the order of the writes around the HTTP send:

1. ``claim``: an upsert that creates the event in ``pending`` and stores the generated text
   (``$setOnInsert``, so a retry or a concurrent copy reuses the first text, never a new one).
2. ``mark_sending``: ``pending -> sending``, atomic and only from ``pending``, immediately before
   the HTTP call. Only one worker can win it, so only one worker can send. For an event with
   nothing recorded yet, ``claim_and_send`` does 1 and 2 in one write (upsert straight into
   ``sending``, or ``pending -> sending``), with the same single winner.
3. The send. After a 2xx: ``sending -> sent`` with the wamid (one write with the attempt), then
   the SQS message is deleted.
   After an answer that proves the message was rejected: ``sending -> pending`` (retried on a
   later delivery) or ``sending -> failed`` (permanent). After an ambiguous one:
   ``sending -> unknown_outcome``.

A crash between ``mark_sending`` and the result leaves ``sending``; the next copy to arrive
turns it into ``unknown_outcome`` (from ``sending_at``), so the grace period applies to it too.
A message that is not even valid enough to name its event is recorded under
``sqs-message:<SQS MessageId>``, never under the event id it may carry, so a malformed copy can
never block a valid copy of the same event.

**Delivery evidence** (:mod:`leadflow.messaging.evidence`): an event whose message a receipt
proved delivered is never sent again whatever its state says; ``mark_sending`` (the one gate before
every send), ``reopen`` and ``reclaim_unknown`` refuse it, and a copy arriving for it settles it as
``sent`` (:meth:`Ledger.settle_by_evidence`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from leadflow.messaging.evidence import ACCEPTED, HAS_EVIDENCE, NO_EVIDENCE, record_attempt

log = logging.getLogger(__name__)


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"
    UNKNOWN_OUTCOME = "unknown_outcome"


# States a new arrival of the event re-evaluates from scratch (redrive, or a fixed cause).
REOPENABLE_STATES = frozenset({State.SKIPPED, State.DEAD_LETTERED, State.FAILED})
UNKNOWN_OUTCOME = State.UNKNOWN_OUTCOME.value
MAX_UNKNOWN_RESENDS = 1

INDEXES = [
    # Per-user pacing across runs: the latest send to a user.
    IndexModel([("user_id", 1), ("sent_at", DESCENDING)], name="user_sent_at"),
    IndexModel([("state", 1), ("updated_at", DESCENDING)], name="state_updated_at"),
]


def aware(value: Any) -> datetime | None:
    """A stored datetime as UTC-aware (documents written without tz_aware come back naive)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def message_key(sqs_message_id: str) -> str:
    """The ledger key of a message that does not name a valid event."""
    return f"sqs-message:{sqs_message_id}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewText:
    """What a message brings to its event's record: the text written for it and where it came from."""

    event_type: str
    user_id: str
    text: str
    text_source: str
    fallback_reason: str | None
    sqs_message_id: str
    openai_usage: dict[str, Any] | None = None  # openai_usage hook: tokens of the reply that wrote `text`

    def event_document(self, key: str) -> dict[str, Any]:
        """A new event's document: ``pending`` with this text."""
        return {
            "event_id": key,
            "event_type": self.event_type,
            "user_id": self.user_id,
            "state": State.PENDING.value,
            "text": self.text,
            "text_source": self.text_source,
            "fallback_reason": self.fallback_reason,
            "openai_usage": self.openai_usage,
            "attempts": 0,
            "created_at": _now(),
        }


def _sending(media: dict[str, str] | None, deadline_at: datetime | None) -> dict[str, Any]:
    """The update that makes an event ``sending`` (one more attempt)."""
    now = _now()
    values: dict[str, Any] = {"state": State.SENDING.value, "sending_at": now, "updated_at": now, "media": media}
    if deadline_at is not None:
        values["deadline_at"] = deadline_at
    return {"$set": values, "$inc": {"attempts": 1}}


class Ledger:
    """State-guarded writes to ``followup_deliveries`` (see the module docstring)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_indexes(INDEXES)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": key})

    def claim(self, key: str, new: NewText) -> dict[str, Any]:
        """Create the event in ``pending`` with its text, or return it as it already is."""
        insert = new.event_document(key)
        update = {
            "$setOnInsert": insert,
            "$set": {"updated_at": insert["created_at"]},
            "$addToSet": {"sqs_message_ids": new.sqs_message_id},
        }
        try:
            doc = self.collection.find_one_and_update(
                {"_id": key}, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # two upserts raced; the other one inserted first
            doc = self.collection.find_one_and_update({"_id": key}, update, return_document=ReturnDocument.AFTER)
        assert doc is not None
        if not doc.get("text"):
            # Reopened before any text was stored (it was dead-lettered early): the first text wins.
            fill = {"text": new.text, "text_source": new.text_source, "fallback_reason": new.fallback_reason}
            doc = self.collection.find_one_and_update(
                {"_id": key, "text": None}, {"$set": fill}, return_document=ReturnDocument.AFTER
            ) or self.get(key)
            assert doc is not None
        return doc

    def mark_sending(
        self, key: str, *, media: dict[str, str] | None = None, deadline_at: datetime | None = None
    ) -> bool:
        """``pending -> sending``; False if the event is not ``pending`` (someone else has it).

        ``media`` (``{"type", "url"}``) is the event's media, kept with the send so that a later
        template resend (:mod:`leadflow.statuses.resend`) carries the same header; ``deadline_at``
        a reminder's deadline (:mod:`leadflow.followups.deadlines`).
        """
        result = self.collection.update_one(
            {"_id": key, "state": State.PENDING.value, **NO_EVIDENCE}, _sending(media, deadline_at)
        )
        return result.modified_count == 1

    def claim_and_send(
        self, key: str, new: NewText, *, media: dict[str, str] | None = None, deadline_at: datetime | None = None
    ) -> dict[str, Any] | None:
        """:meth:`claim` and :meth:`mark_sending` in one write, for an event with nothing recorded
        yet: created straight in ``sending`` with ``text``, or ``pending -> sending`` if a
        concurrent copy created it (then its text is the one to send). Returns the document, or
        None when the event is in another state or has no text yet: then claim and mark_sending.

        Only one writer can win, as with mark_sending: the insert is unique by ``_id`` and the
        update guarded by ``pending``. Upserting copies ``state: pending`` from the filter into the
        new document; ``$set`` then makes it ``sending``, as mongod does.
        """
        fields = new.event_document(key)
        del fields["state"], fields["attempts"]  # set by _sending's $set and $inc
        update = _sending(media, deadline_at)
        update["$setOnInsert"] = fields
        update["$addToSet"] = {"sqs_message_ids": new.sqs_message_id}
        try:
            return self.collection.find_one_and_update(
                {"_id": key, "state": State.PENDING.value, "text": {"$type": "string"}, **NO_EVIDENCE},
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return None

    def mark_sent(self, key: str, *, wamid: str, send_mode: str) -> bool:
        """``sending -> sent`` (also over an ``unknown_outcome`` a redelivered copy recorded)."""
        now = _now()
        sending = {"_id": key, "state": {"$in": [State.SENDING.value, State.UNKNOWN_OUTCOME.value]}}
        sent = {
            "$set": {
                "state": State.SENT.value,
                "wamid": wamid,
                "send_mode": send_mode,
                "sent_at": now,
                "updated_at": now,
                "error_code": None,
                "reason": None,
                "confirmed_by": "response",
            }
        }
        # One write on the usual path: the state and the attempt together, while no receipt has
        # recorded this wamid yet (it may come first: then its status must not be pushed back).
        result = self.collection.update_one(
            {**sending, "sends.wamid": {"$ne": wamid}},
            {**sent, "$push": {"sends": {"wamid": wamid, "status": ACCEPTED, "rank": 0}}},
        )
        if result.matched_count != 1:
            result = self.collection.update_one(sending, sent)
            # Whatever the state says by now (a receipt of an earlier attempt may have settled
            # it), this wamid is one of the event's attempts: its receipts must find the event.
            record_attempt(self.collection, key, wamid)
        if result.matched_count != 1:
            log.error("Ledger: event %s was sent (wamid %s) but is no longer in 'sending'", key, wamid)
        return result.matched_count == 1

    def release(self, key: str, *, error_code: str) -> bool:
        """``sending -> pending`` after an answer that proves the send was rejected, so a redelivery may try again."""
        result = self.collection.update_one(
            {"_id": key, "state": State.SENDING.value},
            {"$set": {"state": State.PENDING.value, "last_error": error_code, "updated_at": _now()}},
        )
        return result.matched_count == 1

    def mark_unknown(self, key: str, *, error_code: str, since: datetime | None = None) -> bool:
        """``sending -> unknown_outcome``: the request may have reached WhatsApp.

        ``since`` is when it may have gone out (default now); the grace period runs from there.
        """
        now = _now()
        result = self.collection.update_one(
            {"_id": key, "state": State.SENDING.value},
            {
                "$set": {
                    "state": State.UNKNOWN_OUTCOME.value,
                    "unknown_outcome_at": since or now,
                    "error_code": error_code,
                    "updated_at": now,
                }
            },
        )
        return result.matched_count == 1

    def reclaim_unknown(self, key: str, *, not_after: datetime) -> dict[str, Any] | None:
        """``unknown_outcome -> pending`` for the one resend, if its grace period ended by ``not_after``.

        None when a receipt (or another copy) got there first or the resends are used up.
        """
        return self.collection.find_one_and_update(
            {
                "_id": key,
                "state": State.UNKNOWN_OUTCOME.value,
                "unknown_outcome_at": {"$lte": not_after},
                "unknown_resends": {"$not": {"$gte": MAX_UNKNOWN_RESENDS}},
                **NO_EVIDENCE,
            },
            {
                "$set": {"state": State.PENDING.value, "updated_at": _now()},
                "$inc": {"unknown_resends": 1},
            },
            return_document=ReturnDocument.AFTER,
        )

    def reopen(self, key: str, *, sqs_message_id: str) -> dict[str, Any] | None:
        """``skipped | dead_lettered | failed -> pending``: the event arrived again, evaluate it anew.

        The previous outcome is kept in ``history``; the stored text is kept (it was validated).
        None if the event is not in one of those states any more.
        """
        doc = self.get(key)
        if doc is None or doc.get("state") not in REOPENABLE_STATES:
            return None
        previous = {k: doc.get(k) for k in ("state", "reason", "error_code", "updated_at") if doc.get(k) is not None}
        return self.collection.find_one_and_update(
            {"_id": key, "state": doc["state"], "updated_at": doc.get("updated_at"), **NO_EVIDENCE},
            {
                "$set": {"state": State.PENDING.value, "updated_at": _now(), "reopened_at": _now()},
                # A new outcome is a new problem for the alert (leadflow.messaging.alert_claims).
                "$unset": {"reason": "", "error_code": "", "dlq_message_id": "", "failed_async": "", "alerted_by": "",
                           "alert_claimed_at": "", "alert_published_at": ""},
                "$push": {"history": previous},
                "$addToSet": {"sqs_message_ids": sqs_message_id},
            },
            return_document=ReturnDocument.AFTER,
        )

    def settle_by_evidence(self, key: str) -> bool:
        """``any state -> sent`` for an event a receipt proved delivered (a document that says otherwise
        was written before the receipt, or before receipts settled events themselves)."""
        doc = self.get(key)
        if doc is None or doc.get("state") == State.SENT:
            return False
        previous = {k: doc.get(k) for k in ("state", "reason", "error_code", "updated_at") if doc.get(k) is not None}
        result = self.collection.update_one(
            {"_id": key, "state": {"$ne": State.SENT.value}, **HAS_EVIDENCE},
            {
                "$set": {"state": State.SENT.value, "confirmed_by": "receipt", "updated_at": _now()},
                "$unset": {"reason": "", "error_code": "", "failed_async": ""},
                "$push": {"history": previous},
            },
        )
        if result.modified_count:
            log.warning("Event %s was %s but a receipt proves it was delivered: now sent", key, doc.get("state"))
        return result.modified_count == 1

    def fail_send(self, key: str, *, error_code: str, reason: str, from_state: State = State.SENDING) -> bool:
        """``sending -> failed`` (a permanent error), or ``unknown_outcome -> failed`` (resends used up)."""
        result = self.collection.update_one(
            {"_id": key, "state": from_state.value},
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
        return aware((doc or {}).get("sent_at"))
