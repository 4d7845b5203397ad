"""The watchdog's promise under generated interleavings (hypothesis): at every check, an hour is
alerted late only if its data has not landed and it was due, every due hour that has not landed is
alerted, each hour at most once, and "recovered" only follows a late alert for an hour that landed.

The timeline is simulated: report runs (scheduled or backfill, succeeding or failing, of any hour
already due), clears of landed runs, hours with no run, and watchdog checks. What landed is
recorded by ``record_landed`` exactly as the report's ``record_landed`` task does; the oracle is
computed independently from the runs: the write-time intervals each successful run read, merged,
and the hours the successful runs had as their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.reports.freshness import check_freshness, scheduled_run_id
from leadflow.reports.watermark import record_landed
from tests.reports.fixture import ist

FRESHNESS = timedelta(minutes=20)
OVERLAP = timedelta(minutes=15)
START = ist(20, 9, 0).astimezone(UTC) + timedelta(seconds=30)
HOURS = [ist(20, hour, 0).astimezone(UTC) for hour in range(9, 22)]


def interval_start(hour: datetime) -> datetime:
    """The cron's data interval: the 09:00 IST run covers the night from 21:00 IST."""
    return hour - timedelta(hours=12) if hour == ist(20, 9, 0) else hour - timedelta(hours=1)


def covered(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> bool:
    """Whether [start, end) lies inside the union of ``intervals``."""
    reach = start
    for lo, hi in sorted(intervals):
        if lo > reach:
            break
        reach = max(reach, hi)
    return reach >= end


class Runs:
    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def state(self, run_id: str) -> str | None:
        return self.states.get(run_id)


step = st.one_of(
    st.tuples(st.just("advance"), st.integers(5, 150)),
    st.tuples(st.just("run"), st.integers(0, len(HOURS) - 1), st.booleans(), st.booleans()),
    st.tuples(st.just("clear"), st.integers(0, len(HOURS) - 1)),
    st.tuples(st.just("check")),
)


@pytest.fixture(scope="module")
def mongo(stack):
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        yield client


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step, min_size=3, max_size=25))
def test_the_watchdog_alerts_exactly_the_hours_whose_data_has_not_landed(mongo, steps: list[tuple]) -> None:
    mongo.drop_database("freshness_invariant")
    db = mongo.freshness_invariant
    runs = Runs()
    now = START
    reads: list[tuple[datetime, datetime]] = []  # write-time intervals successful runs read
    own_hours: set[datetime] = set()  # hours a successful run had as its own interval end
    first_success: datetime | None = None
    watermark: datetime | None = None
    alerted: set[datetime] = set()
    recovered: set[datetime] = set()
    for item in [*steps, ("advance", 30), ("check",)]:
        match item:
            case ("advance", minutes):
                now += timedelta(minutes=minutes)
            case ("run", index, succeeds, scheduled):
                hour = HOURS[index]
                if hour > now:
                    continue  # not due yet: no run of it can exist
                run_id = scheduled_run_id(hour)
                if scheduled:
                    runs.states[run_id] = "success" if succeeds else "failed"
                now += timedelta(seconds=20)
                if succeeds:
                    since = None if watermark is None else watermark - OVERLAP
                    record_landed(db, now, hour, since)
                    reads.append((since, now) if since is not None else (now, now))
                    own_hours.add(hour)
                    first_success = first_success or now
                    watermark = max(watermark or now, now)
            case ("clear", index):
                run_id = scheduled_run_id(HOURS[index])
                if run_id in runs.states:
                    runs.states[run_id] = "queued"
            case ("check",):
                result = check_freshness(db, runs, now, FRESHNESS)

                def landed(hour: datetime) -> bool:
                    return hour in own_hours or covered(reads, interval_start(hour), hour)

                due = [h for h in HOURS if now - timedelta(hours=24) < h <= now - FRESHNESS]
                running_since = first_success or now
                expected = {h for h in due if runs.state(scheduled_run_id(h)) is not None or h > running_since}
                late_now = {h for h in due if h in expected and not landed(h)}
                alerted_now = {h for h in HOURS if scheduled_run_id(h) in result.late}
                recovered_now = {h for h in HOURS if scheduled_run_id(h) in result.recovered}
                # No false alert, none missed, none twice.
                assert alerted_now == late_now - alerted, (steps, now)
                alerted |= alerted_now
                # Recovered: once, only after a late alert, only when landed.
                assert all(landed(h) for h in recovered_now), (steps, now)
                assert recovered_now <= alerted - recovered, (steps, now)
                assert recovered_now == {h for h in alerted - recovered if landed(h)}, (steps, now)
                recovered |= recovered_now
