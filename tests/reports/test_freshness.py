"""The freshness watchdog asks whether an hour's data landed, not whether its run id succeeded.

The run states come from a stand-in for the Task SDK's run-state API (``RunStates``, the Airflow
boundary); what landed is recorded in MongoDB by ``record_landed``, as the report DAG's task does;
alerts are read from the SNS stand-in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from leadflow.reports.freshness import check_freshness, scheduled_run_id
from leadflow.reports.watermark import record_landed
from tests.alerts import alert_inbox
from tests.reports.fixture import ist

FRESHNESS = timedelta(minutes=20)
OVERLAP = timedelta(minutes=15)


class Runs:
    """Run states as the Task SDK reports them: None when the run does not exist."""

    def __init__(self, states: dict[datetime, str] | None = None) -> None:
        self.states = {scheduled_run_id(hour): state for hour, state in (states or {}).items()}

    def state(self, run_id: str) -> str | None:
        return self.states.get(run_id)


@pytest.fixture
def db(clean_stack, monkeypatch):
    # Outside a task there is no supervisor to ask for Variables and connections: the env route.
    monkeypatch.setenv("AIRFLOW_VAR_LEADFLOW_ALERTS_SNS_TOPIC_ARN", clean_stack.alerts_topic_arn)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": clean_stack.sqs_url},
    }))  # fmt: skip
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True) as client:
        yield client.leadflow


def land(db, hour: datetime, first: bool = False) -> None:
    """A successful on-time run of ``hour``: it read at hour + 30 s; its change scan (if it was not
    the first run) began at the previous run's read, minus the overlap."""
    read_at = hour.astimezone(UTC) + timedelta(seconds=30)
    since = None if first else read_at - timedelta(hours=1) - OVERLAP
    record_landed(db, read_at, hour, since)


def subjects(alerts: list[dict]) -> list[str]:
    return [alert["_subject"].split(" report ")[-1] + " " + alert["hour"] for alert in alerts]


def test_a_cleared_hour_that_had_landed_raises_nothing(db, clean_stack) -> None:
    land(db, ist(20, 12, 0), first=True)
    land(db, ist(20, 13, 0))
    # Both cleared (or reprocessed by a backfill): queued again, long past their due time.
    runs = Runs({ist(20, 12, 0): "queued", ist(20, 13, 0): "running"})
    with alert_inbox(clean_stack) as inbox:
        result = check_freshness(db, runs, ist(20, 13, 40), FRESHNESS)
        assert inbox.read() == []
    assert result.late == []


def test_an_hour_that_never_landed_alerts_once_then_recovers_once(db, clean_stack) -> None:
    land(db, ist(20, 11, 0), first=True)
    runs = Runs({ist(20, 11, 0): "success", ist(20, 12, 0): "failed"})
    with alert_inbox(clean_stack) as inbox:
        for minute in (25, 30, 35):  # three watchdog runs see it
            check_freshness(db, runs, ist(20, 12, minute), FRESHNESS)
        assert subjects(inbox.read()) == ["is late 2026-11-20 12:00 IST"]
        land(db, ist(20, 12, 0))  # cleared, and it succeeds
        for minute in (40, 45):
            check_freshness(db, runs, ist(20, 12, minute), FRESHNESS)
        assert subjects(inbox.read()) == ["recovered 2026-11-20 12:00 IST"]


def test_an_hour_with_no_run_at_all_alerts_and_the_next_run_covers_it(db, clean_stack) -> None:
    land(db, ist(20, 10, 0), first=True)
    land(db, ist(20, 11, 0))
    runs = Runs({ist(20, 10, 0): "success", ist(20, 11, 0): "success"})  # no 12:00 or 13:00 run
    with alert_inbox(clean_stack) as inbox:
        result = check_freshness(db, runs, ist(20, 13, 25), FRESHNESS)
        alerts = inbox.read()
        assert subjects(alerts) == ["is late 2026-11-20 12:00 IST", "is late 2026-11-20 13:00 IST"]
        assert {alert["state"] for alert in alerts} == {"no run"}
        assert result.late == [scheduled_run_id(ist(20, 12, 0)), scheduled_run_id(ist(20, 13, 0))]
        # The 14:00 run reads everything written since the 11:00 run: both hours have landed.
        land(db, ist(20, 14, 0))
        check_freshness(db, runs, ist(20, 14, 5), FRESHNESS)
        check_freshness(db, runs, ist(20, 14, 10), FRESHNESS)
        assert sorted(subjects(inbox.read())) == ["recovered 2026-11-20 12:00 IST", "recovered 2026-11-20 13:00 IST"]


def test_hours_before_the_report_first_landed_are_not_expected_unless_they_have_a_run(db, clean_stack) -> None:
    runs = Runs({ist(20, 12, 0): "queued"})  # the first scheduled run ever, stuck
    with alert_inbox(clean_stack) as inbox:
        check_freshness(db, runs, ist(20, 13, 25), FRESHNESS)
        assert subjects(inbox.read()) == ["is late 2026-11-20 12:00 IST"]
        # It lands; the 13:00 hour (no run yet, the first landing came after it began) is due.
        land(db, ist(20, 12, 0), first=True)
        check_freshness(db, runs, ist(20, 13, 30), FRESHNESS)
        assert sorted(subjects(inbox.read())) == ["is late 2026-11-20 13:00 IST", "recovered 2026-11-20 12:00 IST"]


def test_a_backfill_run_that_lands_an_hour_counts_for_it(db, clean_stack) -> None:
    land(db, ist(20, 9, 0), first=True)
    land(db, ist(20, 10, 0))
    # 11:00's scheduled run failed; a backfill of 11:00 landed later (recorded by its own run).
    record_landed(db, ist(20, 11, 50).astimezone(UTC), ist(20, 11, 0), ist(20, 9, 45).astimezone(UTC))
    runs = Runs({ist(20, 9, 0): "success", ist(20, 10, 0): "success", ist(20, 11, 0): "failed"})
    with alert_inbox(clean_stack) as inbox:
        check_freshness(db, runs, ist(20, 11, 55), FRESHNESS)
        assert inbox.read() == []
