"""When a time-critical event is due (``deadline_at``), whoever produced it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leadflow.followups.contract import parse_payload
from leadflow.followups.deadlines import deadline_of

VISIT = datetime(2031, 12, 3, 11, 25, tzinfo=UTC)
USER = "6b15022516408ff385f0194c"


@pytest.mark.parametrize(
    ("due_at", "expected"),
    [
        (None, VISIT - timedelta(minutes=15)),  # another producer's reminder: the README's 15 minutes
        ("2031-12-03T11:15:00Z", VISIT - timedelta(minutes=10)),  # the planner's own due time
        ("2031-12-03T12:00:00+05:30", datetime(2031, 12, 3, 6, 30, tzinfo=UTC)),  # an offset names an instant
        ("2031-12-03T11:40:00Z", VISIT),  # never after the visit
    ],
)
def test_a_reminder_is_due_when_its_producer_says_but_never_after_the_visit(
    due_at: str | None, expected: datetime
) -> None:
    payload = {"event_id": "r", "event_type": "site_visit_reminder", "user_id": USER, "scheduled_at": VISIT.isoformat()}
    if due_at is not None:
        payload["due_at"] = due_at
    assert deadline_of(parse_payload(payload)) == expected


def test_a_nudge_has_no_deadline() -> None:
    assert deadline_of(parse_payload({"event_id": "n", "event_type": "inquiry_followup", "user_id": USER})) is None
