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


def test_rescheduled_cancelled_past_opted_out_and_short_notice(planner_dag, penv) -> None:
    now = datetime.now(UTC)
    point = floor5(now)
    # All of these would be due at once (visit in 12 minutes) if they were eligible.
    soon = now + timedelta(minutes=12)
    short_notice = penv.add_visit(soon)
    penv.add_visit(soon, status="cancelled")
    penv.add_visit(soon, status="completed")
    penv.add_visit(soon, whatsapp_opt_in=False)
    penv.add_visit(now - timedelta(minutes=5))  # over already
    penv.add_visit(now - timedelta(seconds=1), status="scheduled")  # starting right now: over
    moved = penv.add_visit(now + timedelta(hours=3))

    first = run_planner(planner_dag, point)
    assert first["planned"]["site_visit_reminder"] == 1

    # The buyer moves the visit to 13 minutes from now: a new event for the new time only.
    new_time = now + timedelta(minutes=13)
    penv.db.users.update_one({"_id": _oid(moved)}, {"$set": {"site_visit.scheduled_at": new_time}})
    second = run_planner(planner_dag, point)
    assert second["planned"]["site_visit_reminder"] == 1
    assert second["already_planned"]["site_visit_reminder"] == 1

    bodies = penv.receive_all()
    assert sorted((b["user_id"], b["scheduled_at"]) for b in bodies) == sorted(
        [(short_notice, _iso(soon)), (moved, _iso(new_time))]
    )
    # The contract whatsapp_reminders reads, on the reminders' own queue; the planner marks itself
    # as the producer and says when each is due (at once: both visits are less than 15 min away).
    for body in bodies:
        assert set(body) == {"event_id", "event_type", "user_id", "scheduled_at", "due_at", "_attributes", "_queue"}
        assert body["event_id"] == f"site_visit_reminder:{body['user_id']}:{body['scheduled_at']}"
        assert body["_attributes"]["producer"] == "followup_planner"
        assert body["_queue"] == "leadflow-reminders"
        assert now - timedelta(minutes=1) <= datetime.fromisoformat(body["due_at"]) <= datetime.now(UTC)
    assert {p["delay_seconds"] for p in penv.plans().values()} == {0}
    assert penv.queue_counts() == {"visible": 0, "delayed": 0, "in_flight": 0}


def _oid(value: str):
    from bson import ObjectId

    return ObjectId(value)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
