"""The rules Variable and the planning clock (pure functions, no stand-ins needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leadflow.planner.rules import IST, PlanningClock, Rules


def test_defaults_partial_overrides_and_refusals() -> None:
    assert Rules.parse(None) == Rules.parse("") == Rules()
    rules = Rules.parse('{"inquiry_followup": {"quiet_hours": 72}}')
    assert rules.inquiry_followup.quiet_hours == 72
    assert rules.inquiry_followup.repeat_days == 7  # untouched keys keep their defaults
    assert rules.site_visit_reminder.minutes_before == 15
    for bad in (
        '{"inquiry_folowup": {}}',  # a typo must not silently mean "defaults"
        '{"site_visit_reminder": {"plan_ahead_minutes": 16}}',  # SQS delays at most 15 min
        '{"cost_sheet_followup": {"min_quiet_hours": 200, "max_quiet_days": 7}}',
        '{"nudge_hours_ist": {"start": "21:00", "end": "09:00"}}',
        "not json",
    ):
        with pytest.raises(ValueError, match="leadflow_followup_rules"):
            Rules.parse(bad)


def test_nudge_hours_are_ist_and_half_open() -> None:
    hours = Rules().nudge_hours_ist
    assert not hours.contains(datetime(2026, 11, 20, 8, 59, 59, tzinfo=IST))
    assert hours.contains(datetime(2026, 11, 20, 9, 0, tzinfo=IST))
    assert hours.contains(datetime(2026, 11, 20, 3, 30, tzinfo=UTC))  # 09:00 IST
    assert hours.contains(datetime(2026, 11, 20, 20, 59, tzinfo=IST))
    assert not hours.contains(datetime(2026, 11, 20, 21, 0, tzinfo=IST))


def test_a_backfill_nudges_only_when_the_wall_clock_is_in_hours_too() -> None:
    hours = Rules().nudge_hours_ist
    point = datetime(2026, 11, 20, 20, 0, tzinfo=IST)
    night = datetime(2026, 11, 20, 23, 0, tzinfo=IST)
    assert PlanningClock.of_run(point, None, night).nudges_allowed(hours)  # a re-run/test: as of its point
    assert not PlanningClock.of_run(point, None, night, backfill=True).nudges_allowed(hours)
    assert PlanningClock.of_run(point, None, point, backfill=True).nudges_allowed(hours)
    # Without a data interval (a manual run without a logical date) it plans as of run_after.
    clock = PlanningClock.of_run(None, point, night)
    assert clock.point == point.astimezone(UTC)
