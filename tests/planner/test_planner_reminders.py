"""Site-visit reminders through real ``followup_planner`` runs (``dag.test()``) and the stand-ins."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from tests.planner.support import floor5, run_planner

PERIOD = timedelta(minutes=5)


def test_one_reminder_with_the_right_delay_across_four_runs_and_a_rerun(planner_dag, penv) -> None:
    now = datetime.now(UTC)
    base = floor5(now) - 2 * PERIOD
    # Due 8 minutes after the current 5-minute boundary: only the run whose planning point is one
    # period before that may plan it (base + 15 min: its horizon, +5 min, reaches the due time).
    visit = floor5(now) + timedelta(minutes=8) + timedelta(minutes=15)
    user = penv.add_visit(visit)

    summaries, windows = [], []
    for n in range(4):
        started = time.time()
        summaries.append(run_planner(planner_dag, base + n * PERIOD))
        windows.append((started, time.time()))
    rerun = run_planner(planner_dag, base + 3 * PERIOD)

    planned = [s["planned"]["site_visit_reminder"] for s in summaries]
    assert planned == [0, 0, 0, 1]
    assert rerun["planned"]["site_visit_reminder"] == 0
    assert rerun["already_planned"]["site_visit_reminder"] == 1
    # Exactly one message on the queue, held back by SQS (not visible yet).
    assert penv.queue_counts() == {"visible": 0, "delayed": 1, "in_flight": 0}
    [plan] = penv.plans().values()
    event_id = f"site_visit_reminder:{user}:{visit.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert plan["_id"] == event_id
    due = (visit - timedelta(minutes=15)).timestamp()
    started, ended = windows[3]
    # DelaySeconds = seconds from the send until T-15 min, rounded up (never early).
    assert math.ceil(due - ended) <= plan["delay_seconds"] <= math.ceil(due - started)
    assert summaries[3]["reminder_delay_seconds"] == [plan["delay_seconds"]]
