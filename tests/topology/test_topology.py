"""The production topology end to end: Postgres, Celery on Redis, 2 schedulers, 2 triggerers,
2 workers with separate folders, intermediates on s3:// (devstack/topology.py).

One stack session, three checks that only exist on MWAA's shape:

* a backfill racing the on-time run over the same session: the scheduled run extracts, the
  session gets a new message, a backfill of the hour before reads it (and skips the scheduled
  hour it overlaps), and the scheduled run's older snapshot is written *after* the backfill's
  newer one: the row keeps the newer data (``rows_kept_newer``), the issue's "never backwards";
* a three-hour backfill: the sheets equal what on-time runs produce, no task runs twice, and a
  runs' tasks ran on both workers and handed every frame over through S3;
* a follow-up batch with a bad message: outbox, DLQ and ledger as expected, its alert once;
* a late *scheduled* report run (its writes held by a shut ``google_sheets`` pool, freshness at
  0 minutes): exactly one "late" alert and one "recovered" note, although two schedulers, two
  triggerers and four watchdog runs see it; the backfill's runs, as late, raise none.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pymongo
import pytest

from devstack import clients
from devstack.topology import WORKERS, Topology, running_topology
from leadflow.reports.freshness import scheduled_run_id
from tests.alerts import AlertInbox, alert_inbox
from tests.followups.support import Env, event
from tests.helpers import all_spreadsheets, wait_for
from tests.reports import fixture
from tests.reports.fixture import CONSOLIDATED_HEADER, SESSION_HEADER
from tests.reports.test_backfill import latest_scheduled_interval
from tests.reports.test_dag import wipe_sheets
from tests.topology import reference
from tests.topology.reference import LEADS_TITLE, LIVE_USER, REPORT, SESSION_TITLE, report_rows

# `make topology` runs this alone; `make test` runs it with the other `slow` tests, after the rest.
pytestmark = pytest.mark.topology

BUCKET = "leadflow-topology"
FOLLOWUPS = "whatsapp_followups"
WATCHDOG = "interaction_reports_freshness"
# dag.test(logical_date=11:00) is the run at 11:00, i.e. the backfill's logical date 10:00.
ON_TIME_HOURS = [fixture.ist(20, h, 0) for h in (11, 12, 13)]
BACKFILL = ("2026-11-20T10:00:00+05:30", "2026-11-20T12:00:00+05:30")
TIMEOUT_S = 600


def backfill(topology: Topology, span: tuple[str, str], deadline: float) -> int:
    # Its runs at once, as a data team would run a backfill: extracts and transforms on both
    # workers side by side, the writes one at a time through the google_sheets pool.
    body = {"dag_id": REPORT, "from_date": span[0], "to_date": span[1], "max_active_runs": 3,
            "reprocess_behavior": "none"}  # fmt: skip

    def create() -> int | None:
        try:
            return topology.api("POST", "backfills", json=body)["id"]
        except RuntimeError:  # the DAG not parsed yet, or the previous backfill still active
            return None

    return wait_for(f"a backfill of {span}", create, deadline)


def backfill_ended(topology: Topology, backfill_id: int) -> bool:
    """Every run of the backfill ended (its ``completed_at`` may lag by up to 30 s: the
    scheduler marks backfills complete on a fixed 30 s timer)."""
    states = [state for (state,) in topology.query("SELECT state FROM dag_run WHERE backfill_id = %s", backfill_id)]
    return bool(states) and all(state in ("success", "failed") for state in states)


def backfill_runs(topology: Topology) -> list[tuple[str, str, str]]:
    return topology.query(
        "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' ORDER BY logical_date",
        REPORT,
    )


def freshness_notes(alerts: list[dict[str, Any]], ending: str) -> list[str]:
    """The runs of the freshness alerts (subject ending "report is late" or "report recovered")."""
    return [a["run"] for a in alerts if a.get("dag") == REPORT and (a.get("_subject") or "").endswith(ending)]


class Inbox:
    """Every alert read so far (the SNS subscription queue is drained as we go)."""

    def __init__(self, inbox: AlertInbox) -> None:
        self.inbox, self.alerts = inbox, []

    def read(self) -> list[dict[str, Any]]:
        self.alerts += self.inbox.read()
        return self.alerts


def trigger_watchdog(topology: Topology, count: int) -> list[str]:
    """``count`` manual watchdog runs (each one sees every late hour); their run ids."""
    return [topology.trigger(WATCHDOG) for _ in range(count)]


def watchdog_done(topology: Topology, run_ids: list[str]) -> bool:
    states = {r["dag_run_id"]: r["state"] for r in topology.runs(WATCHDOG)}
    assert all(states.get(run_id) != "failed" for run_id in run_ids), states
    return all(states.get(run_id) == "success" for run_id in run_ids)


def run_state(topology: Topology, dag_id: str, run_id: str) -> str | None:
    return next((r["state"] for r in topology.runs(dag_id) if r["dag_run_id"] == run_id), None)


@pytest.mark.slow
def test_the_mwaa_topology_runs_reports_backfills_followups_and_alerts_once(clean_stack, tmp_path) -> None:
    stack = clean_stack
    live_start, live_end = latest_scheduled_interval(datetime.now(UTC))
    scheduled_id = scheduled_run_id(live_end)
    # The hour before the scheduled one: a backfill of it reads the live session too.
    before_start, _ = latest_scheduled_interval(live_start)
    raced_id = f"backfill__{live_start.astimezone(UTC).isoformat()}"
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)
        # The stand-in's default approved templates, structure checked (devstack/whatsapp_templates.json).
        clients.set_settings(stack.control_url("whatsapp"), pair_rate_limit_seconds=6.0)
        stack.boto3_client("s3").create_bucket(Bucket=BUCKET)
        with alert_inbox(stack) as subscription:
            followups = Env(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=subscription)
            good = [event("inquiry_followup", followups.add_user(name=f"Buyer {n}")[0]) for n in (1, 2)]
            for body in good:
                followups.enqueue(body)
            followups.enqueue("{not json")
            inbox = Inbox(subscription)
            extra = {
                "AIRFLOW_VAR_LEADFLOW_OBJECT_STORE_BASE": f"s3://{BUCKET}/leadflow/",
                "AIRFLOW_VAR_LEADFLOW_REPORT_FRESHNESS_MINUTES": "0",
            }
            timings: dict[str, float] = {}
            started = time.monotonic()
            # The expected sheets: on-time dag.test() runs, in a subprocess while the topology starts.
            on_time_runs = reference.on_time_runs(stack, ON_TIME_HOURS, tmp_path / "expected.json")
            with on_time_runs as on_time, running_topology(stack, extra) as topology, timeline_on_failure(topology):
                timings["stack up"] = time.monotonic() - started
                expected_sheets = on_time.sheets(timeout=TIMEOUT_S)
                timings["reference runs"] = time.monotonic() - started
                wipe_sheets(stack)
                # The run the scheduler makes on unpausing (catchup off) has this to write, so
                # it needs the pool; a user of its own keeps the fixture's rows as they were.
                # The session began in the hour before, so a backfill of that hour reads it too.
                client.leadflow.interactions.insert_many(
                    [live_message(before_start + timedelta(minutes=30), "hello"),
                     live_message(live_start + timedelta(minutes=30), "a 3BHK please")]
                )  # fmt: skip
                deadline = time.monotonic() + TIMEOUT_S
                # DAGs start paused (as on MWAA); only these run here.
                topology.set_pool("google_sheets", 0)
                for dag_id in (REPORT, WATCHDOG, FOLLOWUPS):
                    wait_for(f"{dag_id} parsed", lambda d=dag_id: _unpaused(topology, d), deadline)
                wait_for("the scheduled run", lambda: run_state(topology, REPORT, scheduled_id), deadline)
                wait_for("its extract", lambda: task_state(topology, scheduled_id, "extract") == "success", deadline)
                # After the on-time run read the session, before it writes: a new message, read
                # by a backfill of the hour before (the scheduled hour it overlaps is skipped).
                client.leadflow.interactions.insert_one(live_message(live_start + timedelta(minutes=40), "newest"))
                first = backfill(topology, (iso(before_start), iso(live_start)), deadline)
                # Late: its writes wait for the pool. Two watchdog runs (and any scheduled ones) see it.
                late_checks = trigger_watchdog(topology, 2)
                wait_for("the follow-ups' ledger", lambda: len(followups.ledger()) == 3, deadline)
                dlq = wait_for("the dead letter", followups.dlq, deadline)
                wait_for("the follow-up alert", lambda: any(a.get("dag") == FOLLOWUPS for a in inbox.read()), deadline)
                # Its sensor restarts on a worker every few seconds: the workers are the reports' now.
                topology.unpause(FOLLOWUPS, paused=True)
                wait_for("the watchdog runs", lambda: watchdog_done(topology, late_checks), deadline)
                timings["follow-ups and the late alert"] = time.monotonic() - started
                # Both snapshots wait for the pool; it takes the backfill's writes first (the
                # earlier logical date), so the scheduled run's older one is written last.
                for run_id in (raced_id, scheduled_id):
                    for task in ("transform_sessions", "transform_consolidated"):
                        ended = wait_for(task, lambda r=run_id, t=task: ended_state(topology, r, t), deadline)
                        assert ended == "success", (run_id, task, ended)
                topology.set_pool("google_sheets", 1)
                wait_for("the raced backfill", lambda: backfill_ended(topology, first), deadline)
                wait_for("the scheduled run", lambda: run_state(topology, REPORT, scheduled_id) == "success", deadline)
                raced = race_outcome(topology, raced_id, scheduled_id)
                summary_tab = summary_tab_and_xcom(topology, scheduled_id)
                live_rows = live_session_rows(all_spreadsheets(stack))
                # The scheduled hour has landed: the next watchdog runs send its "recovered" note,
                # while the second backfill runs (accepted once a scheduler marks the first complete).
                recovery_checks = trigger_watchdog(topology, 2)
                second = backfill(topology, BACKFILL, deadline)
                wait_for("the watchdog runs", lambda: watchdog_done(topology, recovery_checks), deadline)
                wait_for("the recovered note", lambda: freshness_notes(inbox.read(), "report recovered"), deadline)
                wait_for("the backfill", lambda: backfill_ended(topology, second), deadline)
                timings["backfills and the recovered note"] = time.monotonic() - started
                runs = backfill_runs(topology)
                run_ids = {run_id for run_id, _, _ in runs}
                tasks = topology.query(
                    "SELECT run_id, task_id, state, try_number, hostname FROM task_instance WHERE dag_id = %s",
                    REPORT,
                )
                handed_over = frame_urls(topology, run_ids)
                print_timeline(topology)
            alerts = inbox.read()
        ledger, outbox = followups.ledger(), followups.outbox()
    timings["stack down"] = time.monotonic() - started
    print("topology timings (s since start):", {k: round(v) for k, v in timings.items()})

    # The race: the scheduled run wrote last, with the older snapshot, and kept the newer rows.
    assert raced["order"] == [(raced_id, "write_sessions"), (scheduled_id, "write_sessions")], raced
    assert raced["kept_newer"] == {"write_sessions": 1, "write_consolidated": 1}, raced
    assert live_rows == {"session_messages": [3], "lead_messages": [3]}, live_rows
    # The Leadflow plugin, loaded by this api-server from plugins/, shows the run's return values.
    assert summary_tab["tab"] == summary_tab["xcom"], summary_tab

    # The raced backfill (its overlap with the scheduled hour not redone) + the three-hour
    # backfill: four runs, every task once.
    assert [run_id for run_id, _, _ in runs].count(raced_id) == 1, runs
    assert [state for _, _, state in runs] == ["success"] * 4, runs
    # Tasks that ran (skipped branches and empty operators never reach a worker).
    ours = [t for t in tasks if t[0] in run_ids and t[2] == "success" and t[4]]
    assert {t[1] for t in ours} >= {"extract", "transform_sessions", "write_sessions", "finish"}, ours
    assert all(try_number == 1 for _, _, _, try_number, _ in ours), ours
    assert report_rows(all_spreadsheets(stack)) == expected_sheets
    # Tasks ran on both workers, and every frame one task handed another went through S3. Which
    # worker takes a run's next task is Celery's choice (with three runs at once both workers
    # may be busy with other runs), so a run crossing workers is not asserted: each worker's
    # private /tmp and folders make a local hand-over fail wherever its tasks land.
    assert {host for *_, host in ours} == set(WORKERS), ours
    assert handed_over, handed_over
    assert {(urlsplit(url).scheme, urlsplit(url).hostname) for url in handed_over} == {("s3", BUCKET)}, handed_over

    # Follow-ups: the good ones sent once each, the bad one dead-lettered with its reason.
    assert {key: doc["state"] for key, doc in ledger.items() if not key.startswith("sqs-message:")} == dict.fromkeys(
        (e["event_id"] for e in good), "sent"
    )
    # The bad message has no event id: its ledger entry is keyed by its SQS message id.
    assert [doc["reason"].split(":")[0] for key, doc in ledger.items() if key.startswith("sqs-message:")] == [
        "invalid_json"
    ]
    assert len(outbox) == 2
    assert [m.get("reason_code") for m in dlq] == ["invalid_json"], dlq
    followup_alerts = [a for a in alerts if a.get("dag") == FOLLOWUPS]
    assert len(followup_alerts) == 1, followup_alerts

    # Freshness: one "late" and one "recovered" for the scheduled run, whatever two schedulers,
    # two triggerers and four watchdog runs did; none for the backfill's (as late) runs.
    assert freshness_notes(alerts, "report is late") == [scheduled_id], alerts
    assert freshness_notes(alerts, "report recovered") == [scheduled_id], alerts


def iso(when: datetime) -> str:
    return when.astimezone(fixture.IST).isoformat()


def live_message(when: datetime, text: str) -> dict[str, Any]:
    return {"user_id": LIVE_USER, "session_id": "LIVE", "role": "user", "text": text, "timestamp": when,
            "intent": None}  # fmt: skip


def task_state(topology: Topology, run_id: str, task_id: str) -> str | None:
    rows = topology.query(
        "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s", REPORT, run_id, task_id
    )
    return rows[0][0] if rows else None


def ended_state(topology: Topology, run_id: str, task_id: str) -> str | None:
    state = task_state(topology, run_id, task_id)
    return state if state in ("success", "failed", "upstream_failed", "skipped") else None


def race_outcome(topology: Topology, raced_id: str, scheduled_id: str) -> dict[str, Any]:
    """In which order the two runs' session writes ran, and what the scheduled run's writes kept."""
    order = topology.query(
        "SELECT run_id, task_id FROM task_instance WHERE dag_id = %s AND run_id IN (%s, %s) "
        "AND task_id = 'write_sessions' ORDER BY start_date",
        REPORT, raced_id, scheduled_id,
    )  # fmt: skip
    kept = topology.query(
        "SELECT task_id, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key = 'return_value' "
        "AND task_id IN ('write_sessions', 'write_consolidated')",
        REPORT, scheduled_id,
    )  # fmt: skip
    return {"order": [tuple(row) for row in order], "kept_newer": {t: v["rows_kept_newer"] for t, v in kept}}


def frame_urls(topology: Topology, run_ids: set[str]) -> list[str]:
    """Where the runs' extract and transforms put the frames their downstream tasks read (XCom)."""
    rows = topology.query(
        "SELECT run_id, task_id, value FROM xcom WHERE dag_id = %s AND key = 'return_value'"
        " AND (task_id = 'extract' OR task_id LIKE 'transform_%%')",
        REPORT,
    )
    urls = []
    for run_id, task_id, value in rows:
        if run_id in run_ids:
            keys = ("interactions", "users") if task_id == "extract" else ("path",)
            urls += [value[key] for key in keys]
    return urls


def summary_tab_and_xcom(topology: Topology, run_id: str) -> dict[str, Any]:
    """The run's Summary tab (the plugin's JSON, as the admin) and its XCom in Postgres."""
    answer = topology.http.get(f"{topology.api_url}/leadflow/api/runs/{REPORT}/{quote(run_id, safe='')}", timeout=60)
    answer.raise_for_status()
    xcom = topology.query(
        "SELECT task_id, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key = 'return_value'", REPORT, run_id
    )
    return {"tab": answer.json()["tasks"], "xcom": dict(xcom)}


def live_session_rows(sheets: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The live session's "Messages" in both reports, a row each ([3] once the newest is in)."""
    tabs = sheets[SESSION_TITLE].values()
    sessions = [row for tab in tabs for row in tab.get("rows", []) if row and row[0] == "LIVE"]
    lead_tabs = sheets[LEADS_TITLE].values()  # a lead is in the tab of its first chat's month
    leads = [row for tab in lead_tabs for row in tab.get("rows", []) if row and row[0] == LIVE_USER]
    return {
        "session_messages": [row[SESSION_HEADER.index("Messages")] for row in sessions],
        "lead_messages": [row[CONSOLIDATED_HEADER.index("Messages")] for row in leads],
    }


def print_timeline(topology: Topology) -> None:
    """Where the minutes go: each task's wait in the queue, its run time and its state, per run."""
    rows = topology.query(
        "SELECT dag_id, run_id, task_id, queued_dttm, start_date, end_date, hostname, state FROM task_instance "
        "WHERE start_date IS NOT NULL ORDER BY start_date"
    )
    if not rows:
        return
    zero = min(r[3] or r[4] for r in rows)
    for dag_id, run_id, task_id, queued, start, end, host, state in rows:
        offset = ((queued or start) - zero).total_seconds()
        wait = (start - queued).total_seconds() if queued else 0.0
        took = (end - start).total_seconds() if end else float("nan")
        print(
            f"  +{offset:6.1f}s queued {wait:5.1f}s ran {took:5.1f}s {host or '-':9} {state or '-':15} "
            f"{dag_id}/{task_id} [{run_id}]"
        )


@contextlib.contextmanager
def timeline_on_failure(topology: Topology) -> Iterator[None]:
    """On a failure, what ran where and how it ended, before the stack (and its logs) go."""
    try:
        yield
    except BaseException:
        print_timeline(topology)
        raise


def _unpaused(topology: Topology, dag_id: str) -> bool:
    try:
        topology.unpause(dag_id)
    except RuntimeError:  # 404 until the dag-processor has parsed it
        return False
    return True
