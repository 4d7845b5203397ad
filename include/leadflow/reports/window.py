"""Which interactions a report run looks at.

Scheduled runs use their data interval: the 09:00 IST run covers 21:00 the evening before to
09:00 (the night), every other run the hour before it. A manual run without a logical date has
no data interval; it covers the last completed IST clock hour before it was triggered, which is
what someone pressing "Trigger" in the UI to refresh the sheets expects.
The window is widened backwards by a lookback so late-written interactions are still seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from leadflow.config import DEFAULT_LOOKBACK_MINUTES, REPORT_TIMEZONE

IST = ZoneInfo(REPORT_TIMEZONE)


@dataclass(frozen=True)
class ReportWindow:
    start: datetime  # inclusive, UTC, lookback already applied
    end: datetime  # exclusive, UTC
    interval_start: datetime  # the run's own interval (for display and run summaries)
    manual: bool

    def as_dict(self) -> dict[str, str | bool]:
        """UTC ISO text, for XCom; the run summary shows it in IST (``timefmt.ist_fields``)."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "interval_start": self.interval_start.isoformat(),
            "manual": self.manual,
        }


def last_completed_hour(now: datetime) -> tuple[datetime, datetime]:
    """The IST clock hour that ended last before ``now`` (IST is UTC+5:30: not a UTC hour)."""
    local = _utc(now).astimezone(IST)
    end = local.replace(minute=0, second=0, microsecond=0)
    return (end - timedelta(hours=1)).astimezone(UTC), end.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    """A plain stdlib UTC datetime (Airflow hands over pendulum DateTimes)."""
    return datetime.fromtimestamp(value.timestamp(), UTC)


def report_window(
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime,
    lookback_minutes: int = DEFAULT_LOOKBACK_MINUTES,
) -> ReportWindow:
    if lookback_minutes < 0:
        raise ValueError(f"lookback must not be negative, got {lookback_minutes} minutes")
    manual = data_interval_start is None or data_interval_end is None
    if manual:
        start, end = last_completed_hour(run_after)
    else:
        start, end = _utc(data_interval_start), _utc(data_interval_end)
    return ReportWindow(
        start=start - timedelta(minutes=lookback_minutes), end=end, interval_start=start, manual=manual
    )
