"""Delivery evidence: what proves a follow-up's message reached WhatsApp, shared by the ledger's
guarded writes and the receipts.

``sends`` keeps every attempt's wamid (``{"wamid", "status", "rank"}``;
``status`` is ``accepted`` from the send's answer, then the receipts' best), so a receipt of any
attempt is tied to the event. A ``sent``/``delivered``/``read`` receipt of any attempt (or the
receipts' ``delivery.status``) is *evidence*: the buyer has the message. An event with evidence
is never sent again whatever its state says: ``mark_sending`` (the one gate before every send),
``reopen`` and ``reclaim_unknown`` refuse it, and a copy arriving for it settles it as ``sent``
(:meth:`leadflow.messaging.ledger.Ledger.settle_by_evidence`). Receipts make such an event ``sent`` themselves
(:mod:`leadflow.statuses.delivery`); the gate covers a receipt that lands between a read and a
write, and documents written before ``sends`` existed.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

# Receipts that prove WhatsApp took a message: the buyer has it (or will), so the event is done.
EVIDENCE_STATUSES = ("sent", "delivered", "read")
_EVIDENCE = [
    {"sends": {"$elemMatch": {"status": {"$in": list(EVIDENCE_STATUSES)}}}},
    {"delivery.status": {"$in": list(EVIDENCE_STATUSES)}},
]
HAS_EVIDENCE: dict[str, Any] = {"$or": _EVIDENCE}
# The same negation as field conditions, not a top-level $nor: next to "_id" in a guarded write,
# a top-level logical operator makes the MongoDB stand-in scan the whole collection (~10 ms per
# 1,000 ledger documents per write, the growing cost per message of the follow-ups bench);
# mongod finds the document by _id either way. ``$nin`` on ``sends.status`` holds only when no
# attempt has one of those statuses, as the $elemMatch did.
NO_EVIDENCE: dict[str, Any] = {
    "sends.status": {"$nin": list(EVIDENCE_STATUSES)},
    "delivery.status": {"$nin": list(EVIDENCE_STATUSES)},
}
# What a send's 200 says before any receipt: accepted, not yet evidence (a failed receipt may follow).
ACCEPTED = "accepted"


def has_evidence(doc: dict[str, Any] | None) -> bool:
    """Whether a receipt of any attempt proved the event's message reached WhatsApp (see the module doc)."""
    if not doc:
        return False
    sends = doc.get("sends") or []
    if any(isinstance(s, dict) and s.get("status") in EVIDENCE_STATUSES for s in sends):
        return True
    return (doc.get("delivery") or {}).get("status") in EVIDENCE_STATUSES


def record_attempt(collection: Collection, key: str, wamid: str, status: str = ACCEPTED, rank: int = 0) -> bool:
    """Tie ``wamid`` to the event and move its status forward (rank-guarded); False if it had that or more.

    Shared by the send's answer (``accepted``, rank 0) and the receipts (rank 1-4). Two updates,
    each atomic: add the attempt if the event does not have it yet, else raise its rank.
    """
    added = collection.update_one(
        {"_id": key, "sends.wamid": {"$ne": wamid}},
        {"$push": {"sends": {"wamid": wamid, "status": status, "rank": rank}}},
    )
    if added.modified_count:
        return True
    raised = collection.update_one(
        {"_id": key, "sends": {"$elemMatch": {"wamid": wamid, "rank": {"$lt": rank}}}},
        {"$set": {"sends.$.status": status, "sends.$.rank": rank}},
    )
    return raised.modified_count == 1
