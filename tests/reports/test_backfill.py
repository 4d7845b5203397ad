"""A backfill through the real scheduler (LocalExecutor) leaves the sheets as on-time runs do."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pymongo
import pytest

from devstack.airflow_home import prepare_home
from devstack.run import airflow_components
from devstack.services import free_port
from tests.alerts import alert_inbox
from tests.helpers import all_spreadsheets, load_dag
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
            [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=120
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


@pytest.mark.slow
def test_backfill_through_the_scheduler_matches_on_time_runs_and_late_runs_alert(tmp_path, clean_stack) -> None:
    """One scheduler session checks two things that need a real scheduler and triggerer:
    the backfilled sheets equal the on-time ones, and (with a 2-second freshness deadline,
    which every run here misses) each late run raises exactly one deadline alert."""
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)

    on_time_dag = load_dag("interaction_reports")
    run_hours(on_time_dag, BACKFILL_RUNS)
    on_time = all_spreadsheets(clean_stack)
    wipe_sheets(clean_stack)

    port = free_port()
    env = prepare_home(tmp_path / "airflow", api_port=port)
    # The scheduler does not run a paused DAG's backfill runs; a fresh home pauses new DAGs.
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    env["LEADFLOW_REPORT_DEADLINE_SECONDS"] = "2"
    subprocess.run(
        [sys.executable, "-m", "devstack.airflow_settings", "--state-dir", clean_stack.state_dir], env=env, check=True
    )
    airflow_cli(env, "dags", "reserialize")
    airflow_cli(env, "dags", "pause", "whatsapp_followups")  # its sensor would only add load here
    airflow_cli(env, "dags", "pause", "followup_planner")  # planner (issue 10): a run every 5 min, only load here
    with alert_inbox(clean_stack) as inbox, airflow_components(env, tmp_path / "logs", port):
        # Logical dates are interval starts: 09:00 and 10:00 IST for the 10:00 and 11:00 runs.
        airflow_cli(
            env, "backfill", "create", "--dag-id", "interaction_reports", "--max-active-runs", "1",
            "--from-date", "2026-11-20T09:00:00+05:30", "--to-date", "2026-11-20T10:00:00+05:30",
        )  # fmt: skip
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while True:
            listed = json_output(airflow_cli(env, "dags", "list-runs", "interaction_reports", "-o", "json"))
            # Unpaused, the scheduler also makes today's run; it touches nothing of the fixture.
            runs = [r for r in listed if r["run_id"].startswith("backfill__")]
            states = sorted(r["state"] for r in runs)
            if len(runs) == len(BACKFILL_RUNS) and all(s in ("success", "failed") for s in states):
                break
            assert time.monotonic() < deadline, f"backfill did not finish: {states}"
            time.sleep(3)
        alerts: list[dict] = []
        late = {r["run_id"] for r in runs}
        while not late <= {a.get("run") for a in alerts}:
            assert time.monotonic() < deadline, f"deadline alerts missing: {alerts}"
            alerts += inbox.read()
            time.sleep(1)
    assert states == ["success"] * len(BACKFILL_RUNS), runs
    assert all_spreadsheets(clean_stack) == on_time
    deadline_alerts = [a for a in alerts if a["run"] in late]
    assert sorted(a["run"] for a in deadline_alerts) == sorted(late)  # one each, no repeats
    assert all("missed its deadline" in a["_subject"] for a in deadline_alerts)
