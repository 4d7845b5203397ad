"""Whether it is still right to send an event now, from the buyer's current profile: their
WhatsApp consent, and for a reminder, whether its visit is still the one booked and still ahead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from leadflow.followups.contract import EventType, FollowupEvent
from leadflow.messaging.ledger import aware

VISIT_TIME_TOLERANCE_S = 60
EXPIRED = "expired"


def opt_in(value: Any) -> bool | None:
    """True/False, or None when the stored value cannot be read as consent either way."""
    if value is None or value is True:
        return True
    if value is False:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "y"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "n"):
        return False
    if isinstance(value, int):
        return bool(value)
    return None


def send_time_problem(event: FollowupEvent, user: dict[str, Any], now: datetime) -> str | None:
    """Why a reminder must not go out any more (``expired`` / ``superseded``), or None.

    Checked at send time against the user's *current* ``site_visit``: the event was produced
    when the visit was booked, and may have waited in the queue (or the DLQ) since.
    """
    if event.event_type is not EventType.SITE_VISIT_REMINDER or event.scheduled_at is None:
        return None
    if event.scheduled_at <= now:
        return EXPIRED
    visit = user.get("site_visit")
    if not isinstance(visit, dict):
        return None  # nothing recorded on the user: the event is all we know
    status = str(visit.get("status") or "").strip().lower()
    if status in ("cancelled", "canceled"):
        return "superseded"
    if status == "completed":
        return EXPIRED
    current = aware(visit.get("scheduled_at"))
    if current is not None and abs((current - event.scheduled_at).total_seconds()) > VISIT_TIME_TOLERANCE_S:
        return "superseded"
    return None
