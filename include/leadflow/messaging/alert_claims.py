"""Which of the delivery ledger's problems an alert names: each dead letter and permanent failure once.

A run's summary only knows what its last try of ``process_messages`` saw: a try killed after it
dead-lettered (and deleted from SQS) some messages leaves them in no summary. The ledger
(``followup_deliveries``) holds every one of them, so the alert task *claims* them there: one
atomic ``alerted_by`` stamp, set only where absent, on each ``dead_lettered`` / ``failed`` event
updated within :data:`CLAIM_WINDOW` (older ones predate this check and were alerted, or not, by
the summaries of their time). A retry of the same alert task finds its own stamp and publishes
the same problems again; the next run's alert finds them stamped and leaves them out. Once the
alert is out, :func:`mark_published` says so; a claim still unpublished after
:data:`STALE_CLAIM` (its alert task failed for good: Postgres or SNS away for all its tries, its
worker lost on the last one) is taken over by the next alert, so a problem is alerted late rather
than never. The cost is the rare double alert when a claimant was only slow.
:meth:`leadflow.messaging.ledger.Ledger.reopen` clears the stamp, so an event dead-lettered again
after a redrive is a new problem.

Failures a receipt reported (``failed_async``) are the ``whatsapp_statuses`` alert's, not these.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from leadflow.messaging.ledger import UNKNOWN_OUTCOME, State

CLAIM_WINDOW = timedelta(hours=24)
STALE_CLAIM = timedelta(minutes=30)  # longer than the alert task's tries with their retry delays
MAX_NAMED_IDS = 50  # the alert's event_ids, as the summary's problem_event_ids
PROBLEM_STATES = [State.DEAD_LETTERED.value, State.FAILED.value]


@dataclass
class ClaimedProblems:
    """What one alert names: counts, reason codes (as the DLQ's ``reason_code``) and event ids."""

    dead_lettered: int = 0  # permanent failures included, as in the run summary
    failed: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    event_ids: list[str] = field(default_factory=list)


def reason_code(doc: dict[str, Any]) -> str:
    """The short reason the DLQ copy carries: a send's permanent failure is ``send_failed_<code>``
    (or ``unknown_outcome``); an outcome reached before any send is stored as ``<code>: <detail>``."""
    code = doc.get("error_code")
    if doc.get("state") == State.FAILED.value and code:
        return UNKNOWN_OUTCOME if code == UNKNOWN_OUTCOME else f"send_failed_{code}"
    return str(doc.get("reason") or "unknown").partition(":")[0]


def claim_problems(collection: Collection, claimant: str, *, now: datetime | None = None) -> ClaimedProblems:
    """Stamp ``alerted_by: claimant`` on every recent problem no alert has named, and return every
    problem stamped with ``claimant`` (those of an earlier try of the same alert task too)."""
    now = now or datetime.now(UTC)
    recent_problems = {
        "state": {"$in": PROBLEM_STATES}, "failed_async": {"$ne": True}, "updated_at": {"$gte": now - CLAIM_WINDOW}
    }  # fmt: skip
    unclaimed = {"alerted_by": None}
    abandoned = {"alert_published_at": None, "alert_claimed_at": {"$lt": now - STALE_CLAIM}}
    # Per document atomic: of two alert tasks racing (follow-ups and reminders share the ledger),
    # exactly one stamps each problem.
    collection.update_many(
        {**recent_problems, "$or": [unclaimed, abandoned]},
        {"$set": {"alerted_by": claimant, "alert_claimed_at": now}},
    )
    claimed = ClaimedProblems()
    projection = {"state": 1, "reason": 1, "error_code": 1, "event_id": 1}
    for doc in collection.find({**recent_problems, "alerted_by": claimant}, projection).sort("updated_at", 1):
        claimed.dead_lettered += 1
        claimed.dead_letter_reasons[reason_code(doc)] += 1
        if doc["state"] == State.FAILED.value:
            claimed.failed += 1
            if doc.get("error_code"):
                claimed.failure_codes[str(doc["error_code"])] += 1
        if len(claimed.event_ids) < MAX_NAMED_IDS:
            # A malformed message is keyed by its SQS id but named, as in the summary, by the event it carried.
            claimed.event_ids.append(str(doc.get("event_id") or doc["_id"]))
    return claimed


def mark_published(collection: Collection, claimant: str, *, now: datetime | None = None) -> None:
    """The alert naming ``claimant``'s problems is out: nobody takes them over any more."""
    collection.update_many(
        {"alerted_by": claimant, "alert_published_at": None}, {"$set": {"alert_published_at": now or datetime.now(UTC)}}
    )
