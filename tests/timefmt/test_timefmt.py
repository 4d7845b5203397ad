"""Times for people carry their clock: IST with +05:30, or UTC by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from leadflow.timefmt import ist, ist_fields, utc


def test_ist_shows_the_offset_and_converts_from_any_zone() -> None:
    assert ist(datetime(2026, 11, 20, 4, 30, tzinfo=UTC)) == "2026-11-20 10:00:00 +05:30"
    assert ist(datetime(2026, 11, 20, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))) == (
        "2026-11-20 10:00:00 +05:30"
    )
    assert ist("2026-11-20T18:30:00Z", seconds=False) == "2026-11-21 00:00 +05:30"  # crosses midnight


def test_naive_times_are_utc_and_utc_says_so() -> None:
    assert ist(datetime(2026, 11, 20, 4, 30)) == "2026-11-20 10:00:00 +05:30"
    assert utc("2026-11-20T10:00:00+05:30") == "2026-11-20 04:30:00 UTC"
    assert ist(None) == utc(None) == ""


def test_ist_fields_renders_only_the_named_times() -> None:
    stored = {"start": "2026-11-20T04:30:00+00:00", "note": "2026-11-20T04:30:00+00:00", "manual": True}
    assert ist_fields(stored, "start") == {
        "start": "2026-11-20 10:00:00 +05:30",
        "note": "2026-11-20T04:30:00+00:00",
        "manual": True,
    }
    assert ist_fields(None, "start") is None
