"""Report windows for scheduled runs (via the DAG's real timetable) and manual runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leadflow.reports.window import report_window
from tests.reports.fixture import ist


def interval_of_run_at(run_at: datetime) -> tuple[datetime, datetime]:
    """The data interval the DAG's own timetable gives the run scheduled at ``run_at``."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    from dags.interaction_reports import interaction_reports

    timetable = coerce_to_core_timetable(interaction_reports().timetable)
    interval = timetable.infer_manual_data_interval(run_after=run_at)
    return interval.start, interval.end


@pytest.mark.parametrize(
    ("run_at", "expected_start", "expected_end"),
    [
        # 09:00 covers the night: 21:00 the evening before → 09:00.
        (ist(20, 9, 0), ist(19, 21, 0), ist(20, 9, 0)),
        (ist(20, 10, 0), ist(20, 9, 0), ist(20, 10, 0)),
        (ist(20, 21, 0), ist(20, 20, 0), ist(20, 21, 0)),
    ],
)
def test_scheduled_windows(run_at: datetime, expected_start: datetime, expected_end: datetime) -> None:
    start, end = interval_of_run_at(run_at)
    assert (start, end) == (expected_start, expected_end)
    window = report_window(start, end, run_after=run_at, lookback_minutes=15)
    assert window.start == expected_start - timedelta(minutes=15)
    assert window.end == expected_end
    assert not window.manual


def test_manual_run_covers_the_last_completed_ist_hour() -> None:
    # 14:37 IST is 09:07 UTC: the last completed IST hour is 13:00-14:00 IST (07:30-08:30 UTC).
    triggered = datetime(2026, 11, 20, 9, 7, tzinfo=UTC)
    window = report_window(None, None, run_after=triggered, lookback_minutes=15)
    assert window.manual
    assert window.interval_start == ist(20, 13, 0)
    assert window.end == ist(20, 14, 0)
    assert window.start == ist(20, 12, 45)


def test_negative_lookback_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        report_window(ist(20, 9, 0), ist(20, 10, 0), run_after=ist(20, 10, 0), lookback_minutes=-1)


def test_the_run_summary_shows_the_window_in_ist_while_xcom_keeps_utc(tmp_path) -> None:
    """People read the summary in IST; extract's XCom (which the steps parse back) stays UTC ISO."""
    from leadflow.reports.summary import finish_step

    window = report_window(ist(20, 12, 0), ist(20, 13, 0), ist(20, 13, 0), lookback_minutes=15)
    stored = window.as_dict()
    assert stored["start"] == "2026-11-20T06:15:00+00:00"
    summary = finish_step({"window": stored, "folder": (tmp_path / "run").as_uri()}, {})
    assert summary["window"] == {
        "start": "2026-11-20 11:45:00 +05:30",  # the lookback's 15 minutes included
        "end": "2026-11-20 13:00:00 +05:30",
        "interval_start": "2026-11-20 12:00:00 +05:30",
        "manual": False,
    }
