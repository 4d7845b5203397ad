"""The production topology end to end: Postgres, Celery on Redis, 2 schedulers, 2 triggerers,
2 workers with separate folders, intermediates on s3:// (devstack/topology.py).

One stack session, three checks that only exist on MWAA's shape:

* a report hour, then a three-hour backfill that overlaps it: the sheets equal what on-time runs
  produce, the overlapping hour is not run again, no task runs twice, and a run's tasks really
  crossed workers (so the intermediates had to travel through S3);
* a follow-up batch with a bad message: outbox, DLQ and ledger as expected, its alert once;
* every report run here is late (a 2-second freshness deadline): one alert each, although two
  schedulers and two triggerers could each act on the deadline.
"""

from __future__ import annotations

import time
from typing import Any

import pymongo
import pytest

from devstack import clients
from devstack.topology import WORKERS, Topology, running_topology
from tests.alerts import AlertInbox, alert_inbox
from tests.followups.support import TEMPLATES, Env, event
from tests.helpers import all_spreadsheets, load_dag
from tests.reports import fixture
from tests.reports.test_dag import run_hours, wipe_sheets

# Not yet green (see the README): deselected from make test, run with `make topology`.
pytestmark = pytest.mark.topology

BUCKET = "leadflow-topology"
REPORT = "interaction_reports"
FOLLOWUPS = "whatsapp_followups"
# dag.test(logical_date=11:00) is the run at 11:00, i.e. the backfill's logical date 10:00.
ON_TIME_HOURS = [fixture.ist(20, h, 0) for h in (11, 12, 13)]
REPORT_HOUR = ("2026-11-20T10:00:00+05:30", "2026-11-20T10:00:00+05:30")
BACKFILL = ("2026-11-20T10:00:00+05:30", "2026-11-20T12:00:00+05:30")
TIMEOUT_S = 600


def wait_for(what: str, condition, deadline: float, every: float = 2.0):
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def backfill(topology: Topology, span: tuple[str, str], deadline: float) -> int:
    body = {"dag_id": REPORT, "from_date": span[0], "to_date": span[1], "max_active_runs": 1,
            "reprocess_behavior": "none"}  # fmt: skip

    def create() -> int | None:
        try:
            return topology.api("POST", "backfills", json=body)["id"]
        except RuntimeError:  # the DAG not parsed yet, or the previous backfill still active
            return None

    return wait_for(f"a backfill of {span}", create, deadline)


def backfill_done(topology: Topology, backfill_id: int) -> bool:
    return bool(topology.query("SELECT completed_at FROM backfill WHERE id = %s", backfill_id)[0][0])


def report_runs(topology: Topology) -> list[tuple[str, str, str]]:
    return topology.query(
        "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' ORDER BY logical_date",
        REPORT,
    )


def freshness_alerts(alerts: list[dict[str, Any]], run_ids: set[str]) -> dict[str, int]:
    """How many freshness alerts each of ``run_ids`` raised (today: the DeadlineAlert's
    "missed its deadline" message, see leadflow.alerts.report_deadline_missed). The one place
    that knows what a freshness alert looks like."""
    counts = dict.fromkeys(run_ids, 0)
    for alert in alerts:
        if alert.get("run") in counts and "missed its deadline" in (alert.get("_subject") or ""):
            counts[alert["run"]] += 1
    return counts


class Inbox:
    """Every alert read so far (the SNS subscription queue is drained as we go)."""

    def __init__(self, inbox: AlertInbox) -> None:
        self.inbox, self.alerts = inbox, []

    def read(self) -> list[dict[str, Any]]:
        self.alerts += self.inbox.read()
        return self.alerts


@pytest.mark.slow
def test_the_mwaa_topology_runs_reports_backfills_followups_and_alerts_once(clean_stack) -> None:
    stack = clean_stack
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)
        run_hours(load_dag(REPORT), ON_TIME_HOURS)
        expected_sheets = all_spreadsheets(stack)
        wipe_sheets(stack)

        clients.set_settings(stack.control_url("whatsapp"), templates=sorted(TEMPLATES.values()),
                             pair_rate_limit_seconds=6.0)  # fmt: skip
        stack.boto3_client("s3").create_bucket(Bucket=BUCKET)
        with alert_inbox(stack) as subscription:
            followups = Env(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=subscription)
            good = [event("site_visit_reminder", followups.add_user(name=f"Buyer {n}")[0]) for n in (1, 2)]
            for body in good:
                followups.enqueue(body)
            followups.enqueue("{not json")
            inbox = Inbox(subscription)
            extra = {
                "AIRFLOW_VAR_LEADFLOW_OBJECT_STORE_BASE": f"s3://{BUCKET}/leadflow/",
                "LEADFLOW_REPORT_DEADLINE_SECONDS": "2",
            }
            with running_topology(stack, extra) as topology:
                deadline = time.monotonic() + TIMEOUT_S
                first = backfill(topology, REPORT_HOUR, deadline)
                wait_for("the report hour", lambda: backfill_done(topology, first), deadline)
                second = backfill(topology, BACKFILL, deadline)
                wait_for("the backfill", lambda: backfill_done(topology, second), deadline)
                runs = report_runs(topology)
                run_ids = {run_id for run_id, _, _ in runs}
                wait_for(
                    "a freshness alert for every report run",
                    lambda: all(freshness_alerts(inbox.read(), run_ids).values()),
                    deadline,
                )
                wait_for("the follow-ups' ledger", lambda: len(followups.ledger()) == 2, deadline)
                dlq = wait_for("the dead letter", followups.dlq, deadline)
                wait_for("the follow-up alert", lambda: any(a.get("dag") == FOLLOWUPS for a in inbox.read()), deadline)
                tasks = topology.query(
                    "SELECT run_id, task_id, state, try_number, hostname FROM task_instance WHERE dag_id = %s",
                    REPORT,
                )
            alerts = inbox.read()

    # Report hour + backfill: three runs, the overlapping hour not redone, every task once.
    assert [state for _, _, state in runs] == ["success"] * 3, runs
    # Tasks that ran (skipped branches and empty operators never reach a worker).
    ours = [t for t in tasks if t[0] in run_ids and t[2] == "success" and t[4]]
    assert {t[1] for t in ours} >= {"extract", "transform_sessions", "write_sessions", "finish"}, ours
    assert all(try_number == 1 for _, _, _, try_number, _ in ours), ours
    assert all_spreadsheets(stack) == expected_sheets
    # Tasks ran on both workers, and the two transforms of a run went to different ones.
    assert {host for *_, host in ours} == set(WORKERS), ours
    transforms = [t for t in ours if t[1].startswith("transform_")]
    assert any(len({t[4] for t in transforms if t[0] == run}) == 2 for run in run_ids), transforms

    # Follow-ups: the good ones sent once each, the bad one dead-lettered with its reason.
    ledger = followups.ledger()
    assert sorted(ledger) == sorted(e["event_id"] for e in good)
    assert {doc["state"] for doc in ledger.values()} == {"sent"}
    assert len(followups.outbox()) == 2
    assert [m.get("reason") for m in dlq] == ["invalid_json"], dlq
    followup_alerts = [a for a in alerts if a.get("dag") == FOLLOWUPS]
    assert len(followup_alerts) == 1, followup_alerts

    # Freshness: exactly one alert per late run, whatever two schedulers/triggerers did.
    assert freshness_alerts(alerts, run_ids) == dict.fromkeys(run_ids, 1), alerts
