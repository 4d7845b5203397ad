"""Deadlines of time-critical follow-ups (site-visit reminders): when one is due, and how late it went.

A reminder is due ``due_at`` (the planner's due time: 15 min before the visit, or at once for a
visit booked later than that), or, from a producer that does not say, 15 min before the visit.
It is never due after the visit itself. The ledger document of a reminder carries that as
``deadline_at``; one sent after it gets ``late_seconds``. One still unsent when the visit starts
is skipped as ``expired``: counted per run and alerted, never silent.

SQS releases a planned reminder exactly at its due time (``DelaySeconds``), so a few seconds of
lateness are the normal cost of receiving and sending it: a reminder counts as *late* (and is
alerted) only past :data:`LATE_TOLERANCE_SECONDS`; ``late_seconds`` is recorded either way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from leadflow.followups.contract import EventType, FollowupEvent

DEFAULT_REMINDER_LEAD = timedelta(minutes=15)
# Receive (a long poll returns as soon as a message is visible), the hand-over from the sensor to
# the processing task (up to a minute on MWAA's scheduler) and the send itself.
LATE_TOLERANCE_SECONDS = 120.0


def deadline_of(event: FollowupEvent) -> datetime | None:
    """When ``event`` must reach the buyer, or None for an event that is not time-critical."""
    if event.event_type is not EventType.SITE_VISIT_REMINDER or event.scheduled_at is None:
        return None
    due = event.due_at or event.scheduled_at - DEFAULT_REMINDER_LEAD
    return min(due, event.scheduled_at)


def late_seconds(deadline: datetime, sent_at: datetime) -> float:
    """Seconds after ``deadline`` (0 when on or before it)."""
    return max(0.0, (sent_at - deadline).total_seconds())


def is_late(seconds: float) -> bool:
    return seconds > LATE_TOLERANCE_SECONDS


def record_lateness(deliveries: Collection, event_id: str, seconds: float) -> None:
    update: dict[str, Any] = {"$set": {"late_seconds": round(seconds, 3)}}
    deliveries.update_one({"_id": event_id}, update)
