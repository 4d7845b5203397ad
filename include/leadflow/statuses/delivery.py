"""Receipts' writes to the delivery ledger ``followup_deliveries`` (contract: CONTRACT-followups.md).

Each event document gains ``delivery``: ``status`` (sent | delivered | read | failed), ``rank``
(1 | 2 | 3 | 4), ``wamid``, the first time each status was reported (``sent_at``, ``delivered_at``,
``read_at``, ``failed_at``) and, when failed, ``error_code`` / ``error_title``.

**Monotonic.** Meta promises neither order nor uniqueness, so every write is guarded by rank:
a status is taken only over a lower rank (a repeated or late ``sent`` never overwrites
``read``), and timestamps keep the earliest report (``$min``). ``failed`` (rank 4) is taken only
over nothing or ``sent``: a message already delivered or read reached the buyer, whatever a later
failure says. ``read`` without ``delivered`` is normal (Meta skips it when the chat is open).

**Every attempt.** An event may have been sent more than once (an ambiguous send, then its one
resend after the grace period). Each receipt is also recorded on the event's ``sends`` entry for
its wamid (:func:`leadflow.messaging.ledger.record_attempt`), so receipts of *any* attempt are
tied to the event, by callback data or by any attempt's wamid.

Besides ``delivery`` this module writes ``state`` only as the contract allows:

* a ``sent``/``delivered``/``read`` receipt of any attempt is evidence the buyer has the message:
  the event becomes ``sent`` (``confirmed_by: receipt``) from **any** other state (``failed``,
  ``unknown_outcome``, ``dead_lettered``, ``pending``, ...), the previous outcome kept in
  ``history``, so no redrive or copy can send it again;
* a ``failed`` receipt marks the event ``failed`` (``reason: delivery_failed``, ``failed_async:
  true``) only when it is about the event's latest attempt and no attempt has evidence: a late
  ``failed`` for an older wamid never fails an event a newer attempt delivered (it is recorded
  on its ``sends`` entry only). 131047 claims the one template resend instead (``resend``, see
  :mod:`leadflow.statuses.resend`).

After a resend the event's ``delivery`` tracks the *resent* message (the one the buyer should
have); the original's is kept in ``resend.replaced_delivery`` and its late receipts are ignored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.collection import Collection

from leadflow.messaging.evidence import EVIDENCE_STATUSES, HAS_EVIDENCE, record_attempt
from leadflow.messaging.ledger import State
from leadflow.statuses.webhook import Receipt

log = logging.getLogger(__name__)

RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
# The ledger states of the contract (owned by the follow-ups; only the ones written here).
SENT = State.SENT.value
FAILED = State.FAILED.value
UNCONFIRMED = (State.UNKNOWN_OUTCOME.value, State.SENDING.value)
# A failed receipt can fail an event the follow-ups consider done or in flight, never one they
# already closed another way (skipped, dead_lettered).
FAILABLE = (SENT, *UNCONFIRMED)

INDEXES = [
    IndexModel([("wamid", 1)], name="wamid", sparse=True),
    IndexModel([("sends.wamid", 1)], name="sends_wamid", sparse=True),
]


class Applied(StrEnum):
    """What one receipt did to the ledger (the run summary counts these)."""

    RECORDED = "recorded"  # delivery moved forward
    CONFIRMED = "confirmed"  # recorded, and an unknown_outcome/sending event is now sent
    STALE = "stale"  # repeated, out of order, or about a message a resend replaced: no change
    FAILED = "failed"  # recorded failed; the event is failed
    RESEND = "resend"  # 131047: the caller resends the template (the claim is its job)
    UNMATCHED = "unmatched"  # no event has this callback data or wamid


def _now() -> datetime:
    return datetime.now(UTC)


class DeliveryLedger:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_indexes(INDEXES)

    def find(self, receipt: Receipt) -> dict[str, Any] | None:
        """The event a receipt is about: by callback data (= event id) first, then by wamid."""
        if receipt.callback_data:
            doc = self.collection.find_one({"_id": receipt.callback_data})
            if doc is not None:
                return doc
        return self.collection.find_one(
            {"$or": [{"wamid": receipt.wamid}, {"sends.wamid": receipt.wamid}, {"resend.wamid": receipt.wamid}]}
        )

    @staticmethod
    def is_replaced(doc: dict[str, Any], receipt: Receipt) -> bool:
        """Whether the receipt is about the original message of an event that was resent."""
        resend = doc.get("resend")
        if not resend:
            return False
        if resend.get("wamid") is not None:
            return resend["wamid"] != receipt.wamid
        # Without the resend's wamid (in flight, answer lost) only the original's wamid is known.
        return receipt.wamid in (doc.get("wamid"), resend.get("replaced_wamid"))

    @staticmethod
    def is_older_attempt(doc: dict[str, Any], receipt: Receipt) -> bool:
        """Whether the receipt is about an attempt older than the event's latest known one."""
        resend = doc.get("resend")
        latest = resend.get("wamid") if resend else doc.get("wamid")
        return latest is not None and latest != receipt.wamid

    def apply(self, doc: dict[str, Any], receipt: Receipt) -> Applied:
        """Record ``receipt`` on ``doc``'s event (idempotent; see the module docstring)."""
        if self.is_replaced(doc, receipt):
            return Applied.STALE
        key = doc["_id"]
        record_attempt(self.collection, key, receipt.wamid, receipt.status, RANK[receipt.status])
        if receipt.status == "failed":
            if self.is_older_attempt(doc, receipt):
                return Applied.STALE
            if not self._move(key, receipt):
                return Applied.STALE
            if receipt.error_code == 131047 and doc.get("send_mode") != "template" and not doc.get("resend"):
                return Applied.RESEND
            return Applied.FAILED if self.fail_event(key, receipt) else Applied.STALE
        moved = self._move(key, receipt)
        # The filter decides; the state read with the document only spares the common case a write.
        confirmed = doc.get("state") != SENT and self._confirm_sent(key, receipt, is_resend=bool(doc.get("resend")))
        if confirmed:
            return Applied.CONFIRMED
        return Applied.RECORDED if moved else Applied.STALE

    def _move(self, key: str, receipt: Receipt) -> bool:
        """Rank-guarded ``delivery`` update; False if a receipt of equal or higher rank was there.

        A ``failed`` is taken over nothing or ``sent``, and never while another attempt has
        evidence; any good news is taken over a ``failed`` of another attempt.
        """
        rank = RANK[receipt.status]
        if receipt.status == "failed":
            other_attempt_delivered = {"wamid": {"$ne": receipt.wamid}, "status": {"$in": list(EVIDENCE_STATUSES)}}
            guard: dict[str, Any] = {
                "_id": key,
                "$or": [{"delivery.rank": {"$exists": False}}, {"delivery.rank": {"$lt": 2}}],
                "sends": {"$not": {"$elemMatch": other_attempt_delivered}},
            }
        else:
            guard = {
                "_id": key,
                "$or": [
                    {"delivery.rank": {"$exists": False}},
                    {"delivery.rank": {"$lt": rank}},
                    {"delivery.status": "failed", "delivery.wamid": {"$ne": receipt.wamid}},
                ],
            }
        values: dict[str, Any] = {
            "delivery.status": receipt.status,
            "delivery.rank": rank,
            "delivery.wamid": receipt.wamid,
            "updated_at": _now(),
        }
        if receipt.status == "failed":
            values["delivery.error_code"] = str(receipt.error_code) if receipt.error_code is not None else None
            values["delivery.error_title"] = receipt.error_title
        stamp = {f"delivery.{receipt.status}_at": receipt.at}
        moved = self.collection.update_one(guard, {"$set": values, "$min": stamp}).modified_count == 1
        if not moved and receipt.status != "failed":
            # Out of order: the status is not current any more, but when it happened still counts.
            self.collection.update_one({"_id": key}, {"$min": stamp})
        return moved

    def _confirm_sent(self, key: str, receipt: Receipt, *, is_resend: bool) -> bool:
        """``any state -> sent``: the receipt is evidence the buyer has the message."""
        doc = self.collection.find_one({"_id": key}, projection={"state": 1, "reason": 1, "error_code": 1})
        if doc is None or doc.get("state") == SENT:
            return False
        previous = {k: doc[k] for k in ("state", "reason", "error_code") if doc.get(k) is not None}
        values: dict[str, Any] = {"state": SENT, "confirmed_by": "receipt", "updated_at": _now()}
        result = self.collection.update_one(
            {"_id": key, "state": doc.get("state"), **HAS_EVIDENCE},
            {
                "$set": {**values, "sent_at": receipt.at},
                "$unset": {"reason": "", "error_code": "", "failed_async": ""},
                "$push": {"history": {**previous, "updated_at": _now()}},
            },
        )
        if not result.modified_count:
            return False
        if not is_resend:
            # The attempt that reached the buyer, unless the answer of another one named it first.
            self.collection.update_one({"_id": key, "wamid": None}, {"$set": {"wamid": receipt.wamid}})
        level = logging.WARNING if previous.get("state") not in UNCONFIRMED else logging.INFO
        log.log(level, "Event %s (%s): receipt '%s' proves the send (wamid %s)", key, previous.get("state"),
                receipt.status, receipt.wamid)  # fmt: skip
        return True

    def fail_event(self, key: str, receipt: Receipt, reason: str = "delivery_failed") -> bool:
        code = str(receipt.error_code) if receipt.error_code is not None else "unknown"
        result = self.collection.update_one(
            {"_id": key, "state": {"$in": list(FAILABLE)}},
            {
                "$set": {
                    "state": FAILED,
                    "error_code": code,
                    "reason": reason,
                    "failed_async": True,
                    "updated_at": _now(),
                }
            },
        )
        return result.modified_count == 1

    # -- the 131047 resend (driven by leadflow.statuses.resend) -----------------------------------

    def claim_resend(self, key: str, receipt: Receipt) -> dict[str, Any] | None:
        """Claim the event's one resend; None if it was claimed before (a repeated receipt)."""
        doc = self.collection.find_one({"_id": key}, projection={"delivery": 1})
        now = _now()
        return self.collection.find_one_and_update(
            {"_id": key, "resend": {"$exists": False}},
            {
                "$set": {
                    "resend": {
                        "reason": str(receipt.error_code),
                        "at": now,
                        "wamid": None,
                        "outcome": "sending",
                        "replaced_wamid": receipt.wamid,
                        "replaced_delivery": (doc or {}).get("delivery"),
                    },
                    "delivery": {},
                    "updated_at": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )

    def undo_failed(self, doc: dict[str, Any], receipt: Receipt) -> None:
        """Put ``delivery`` back as ``doc`` had it, so the redelivered 131047 claims the resend again."""
        self.collection.update_one(
            {
                "_id": doc["_id"],
                "resend": {"$exists": False},
                "delivery.wamid": receipt.wamid,
                "delivery.status": "failed",
            },
            {"$set": {"delivery": doc.get("delivery") or {}}},
        )

    def release_resend(self, key: str, replaced_delivery: dict[str, Any] | None) -> None:
        """Undo a claim whose send provably did not happen, so a redelivery may try again."""
        self.collection.update_one(
            {"_id": key, "resend.outcome": "sending"},
            {"$unset": {"resend": ""}, "$set": {"delivery": replaced_delivery or {}, "updated_at": _now()}},
        )

    def finish_resend(self, key: str, *, outcome: str, wamid: str | None = None, error_code: str | None = None) -> None:
        values: dict[str, Any] = {"resend.outcome": outcome, "updated_at": _now()}
        if wamid is not None:
            values["resend.wamid"] = wamid
        if error_code is not None:
            values["resend.error_code"] = error_code
        self.collection.update_one({"_id": key}, {"$set": values})
        if outcome == "sent":
            # The failed receipt proved the original reached WhatsApp; the resend was accepted.
            self.collection.update_one(
                {"_id": key, "state": {"$in": list(UNCONFIRMED)}},
                {"$set": {"state": SENT, "confirmed_by": "resend", "updated_at": _now()}},
            )
