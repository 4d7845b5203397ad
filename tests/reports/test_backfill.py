"""Through the real scheduler (LocalExecutor, two triggerers): a backfill leaves the
sheets as on-time runs do, and the freshness watchdog alerts once per late scheduled hour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from devstack.airflow_home import prepare_home
from devstack.run import airflow_components
from devstack.services import free_port
from leadflow.reports.freshness import scheduled_run_id
from tests.alerts import alert_inbox
from tests.helpers import all_spreadsheets, load_dag, wait_for
from tests.reports import fixture
from tests.reports.test_dag import run_hours, wipe_sheets

# The runs at 10:00 (nothing touched: the skip path) and 11:00 (S1: the write path); every
# task process the LocalExecutor starts costs seconds, so two runs keep this test near a minute.
BACKFILL_RUNS = fixture.RUN_HOURS[1:3]
BACKFILL_TIMEOUT_S = 420


def airflow_cli(env: dict[str, str], *args: str) -> str:
    # SQLite answers "database is locked" at once when two writers would deadlock, whatever the
    # busy timeout; with a scheduler writing alongside, a CLI call then simply tries again.
    for _attempt in range(10):
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0 or "database is locked" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def json_output(stdout: str) -> list[dict]:
    """The CLI's JSON table; Airflow prints warnings (e.g. no graphviz) before it on stdout."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("["))
    return json.loads("\n".join(lines[start:]))


@contextmanager
def second_triggerer(env: dict[str, str], log_dir) -> Iterator[None]:
    """A second triggerer on the same metadata DB, as on MWAA. (A second scheduler is not run:
    on SQLite, Airflow has no row locks, and two schedulers queue the same task instance twice,
    which fails it; the watchdog's MongoDB claim is what makes any number of them alert once.)"""
    procs = []
    try:
        for component in ("triggerer",):
            log = (log_dir / f"{component}-2.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "airflow", component],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def runs_of(env: dict[str, str], dag_id: str) -> list[dict]:
    return json_output(airflow_cli(env, "dags", "list-runs", dag_id, "-o", "json"))


def latest_scheduled_interval(now: datetime) -> tuple[datetime, datetime]:
    """The data interval of the run the scheduler creates on unpausing (catchup off)."""
    from leadflow.reports.freshness import scheduled_hours

    end = scheduled_hours(now, timedelta(0))[-1]
    start = end - (timedelta(hours=12) if end.astimezone(fixture.IST).hour == 9 else timedelta(hours=1))
    return start, end


def watchdog_checks(env: dict[str, str], count: int, deadline: float) -> None:
    def manual_successes() -> int:
        runs = runs_of(env, "interaction_reports_freshness")
        return sum(1 for r in runs if r["run_id"].startswith("manual__") and r["state"] == "success")

    before = manual_successes()
    for _ in range(count):
        airflow_cli(env, "dags", "trigger", "interaction_reports_freshness")
    wait_for("watchdog runs", lambda: manual_successes() >= before + count, deadline)


# The MWAA topology test (tests/topology) checks the same on Postgres with two schedulers, in
# make test; this LocalExecutor/SQLite run (make run's shape) is on demand: make local-scheduler.
@pytest.mark.slow
@pytest.mark.local_scheduler
def test_backfill_and_freshness_through_the_scheduler_with_two_triggerers(tmp_path, clean_stack) -> None:
    """One scheduler session (with two triggerers, as on MWAA) checks what needs the real
    scheduler: the backfilled sheets equal the on-time ones; a late *scheduled* run raises
    exactly one "late" alert however many watchdog runs see it, then one "recovered" note; the
    backfill's runs, as late as it, raise none. Lateness is provoked, not waited for: the
    freshness Variable is 0 minutes and the ``google_sheets`` pool has 0 slots until released."""
    now = datetime.now(UTC)
    live_start, live_end = latest_scheduled_interval(now)
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)

    on_time_dag = load_dag("interaction_reports")
    run_hours(on_time_dag, BACKFILL_RUNS)
    on_time = all_spreadsheets(clean_stack)
    wipe_sheets(clean_stack)
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        # Something to write for the run the scheduler makes on unpausing, so it needs the pool.
        client.leadflow.interactions.insert_one(
            {"user_id": fixture.U4, "session_id": "LIVE", "role": "user", "text": "hello",
             "timestamp": live_start + timedelta(minutes=30), "intent": None}
        )  # fmt: skip

    port = free_port()
    env = prepare_home(tmp_path / "airflow", api_port=port)
    # The scheduler does not run a paused DAG's backfill runs; a fresh home pauses new DAGs.
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    subprocess.run(
        [sys.executable, "-m", "devstack.airflow_settings", "--state-dir", clean_stack.state_dir], env=env, check=True
    )
    airflow_cli(env, "variables", "set", "leadflow_report_freshness_minutes", "0")
    airflow_cli(env, "pools", "set", "google_sheets", "0", "held shut by the test")
    airflow_cli(env, "dags", "reserialize")
    # Every other DAG (the follow-ups sensors, the planner's 5-minute runs) would only add load here.
    airflow_cli(env, "dags", "pause", "--treat-dag-id-as-regex", "--yes", "^(?!interaction_reports)")
    log_dir = tmp_path / "logs"
    with (
        alert_inbox(clean_stack) as inbox,
        airflow_components(env, log_dir, port),
        second_triggerer(env, log_dir),
    ):
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        # Logical dates are interval starts: 09:00 and 10:00 IST for the 10:00 and 11:00 runs.
        airflow_cli(
            env, "backfill", "create", "--dag-id", "interaction_reports", "--max-active-runs", "1",
            "--from-date", "2026-11-20T09:00:00+05:30", "--to-date", "2026-11-20T10:00:00+05:30",
        )  # fmt: skip
        scheduled_id = scheduled_run_id(live_end)
        run_ids = lambda: {r["run_id"] for r in runs_of(env, "interaction_reports")}  # noqa: E731
        wait_for("the scheduled run", lambda: scheduled_id in run_ids(), deadline)
        # Late: its writes wait for the pool. Two watchdog runs (and any scheduled ones) see it.
        watchdog_checks(env, 2, deadline)
        airflow_cli(env, "pools", "set", "google_sheets", "1", "released")

        def finished() -> list[dict] | None:
            runs = [r for r in runs_of(env, "interaction_reports")
                    if r["run_id"].startswith("backfill__") or r["run_id"] == scheduled_id]  # fmt: skip
            done = len(runs) == len(BACKFILL_RUNS) + 1 and all(r["state"] in ("success", "failed") for r in runs)
            return runs if done else None

        runs = wait_for("the report runs", finished, deadline)
        watchdog_checks(env, 2, deadline)
        alerts: list[dict] = []

        def recovered_note() -> bool:
            alerts.extend(inbox.read())
            return any(a["_subject"].endswith("report recovered") for a in alerts)

        wait_for("the recovered note", recovered_note, deadline, every=1)
        alerts.extend(inbox.read())
    assert sorted(r["state"] for r in runs) == ["success"] * len(runs), runs
    assert (
        all_spreadsheets(clean_stack)["Leadflow — Session-wise report"]["2026-11"]
        == (on_time["Leadflow — Session-wise report"]["2026-11"])
    )
    subjects = sorted(a["_subject"] for a in alerts)
    late = [a for a in alerts if a["_subject"].endswith("report is late")]
    recovered = [a for a in alerts if a["_subject"].endswith("report recovered")]
    assert [a["run"] for a in late] == [scheduled_id], subjects  # one, and none for the backfill
    assert [a["run"] for a in recovered] == [scheduled_id], subjects
    assert len(alerts) == 2, subjects
