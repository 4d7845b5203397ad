"""Overlapping planner runs (a backfill beside today's run, re-runs, retries) nudge a buyer once.

Each run is split where overlapping runs interleave: :func:`evaluate` (reads only) and
:func:`commit` (claim, SQS, ``followup_plans``). Two runs that both evaluate before either
commits are what a backfill running beside the on-time run does.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.planner.claims import ABANDONED_AFTER, CLAIMS
from leadflow.planner.rules import PlanningClock, Rules
from leadflow.planner.run import commit, evaluate
from tests.planner.support import IST, PlannerEnv

TODAY = datetime(2026, 11, 20, 10, 0, tzinfo=IST).astimezone(UTC)  # in nudge hours
RULES = Rules()
REPEAT = timedelta(days=RULES.inquiry_followup.repeat_days)


def _hot_lead(penv: PlannerEnv, quiet_since: datetime) -> str:
    user = penv.add_user("Hot Lead", ranking="High", created_at=quiet_since - timedelta(days=30))
    penv.message(user, quiet_since)
    return user


def _clock(point: datetime, backfill: bool = False) -> PlanningClock:
    # The wall clock of every run is today's point: in nudge hours, whatever the test machine's time.
    return PlanningClock(point=point, now=TODAY, backfill=backfill)


def _nudges(penv: PlannerEnv) -> list[dict[str, Any]]:
    return [m for m in penv.receive_all() if m["event_type"] == "inquiry_followup"]


def test_a_backfill_beside_todays_run_plans_one_nudge_per_buyer(penv: PlannerEnv) -> None:
    user = _hot_lead(penv, TODAY - timedelta(days=5))
    yesterday = _clock(TODAY - timedelta(days=1), backfill=True)
    today = _clock(TODAY)

    # Both read followup_plans and the ledger before either writes.
    backfill, on_time = evaluate(penv.db, yesterday, RULES), evaluate(penv.db, today, RULES)
    first = commit(penv.db, penv.sqs, penv.stack.queue_url, on_time, "scheduled__today", penv.stack.reminders_queue_url)
    second = commit(
        penv.db, penv.sqs, penv.stack.queue_url, backfill, "backfill__yesterday", penv.stack.reminders_queue_url
    )

    [nudge] = _nudges(penv)
    assert nudge["user_id"] == user
    assert first["planned"]["inquiry_followup"] == 1
    assert second["planned"]["inquiry_followup"] == 0
    assert second["held"]["inquiry_claimed_by_another_run"] == 1
    # A re-run of today's (cleared, or a retry) is the same event: already planned, not held.
    again = commit(
        penv.db,
        penv.sqs,
        penv.stack.queue_url,
        evaluate(penv.db, today, RULES),
        "scheduled__today",
        penv.stack.reminders_queue_url,
    )
    assert again["already_planned"]["inquiry_followup"] == 1
    assert _nudges(penv) == []


def test_a_claim_whose_run_never_enqueued_is_released(penv: PlannerEnv) -> None:
    _hot_lead(penv, TODAY - timedelta(days=5))
    # A run of yesterday claimed the buyer, then failed before its message reached the queue.
    penv.db[CLAIMS].insert_one({
        "_id": f"inquiry_followup:{penv.db.users.find_one()['_id']}", "event_id": "inquiry_followup:lost",
        "planning_point": TODAY - timedelta(days=1), "claimed_at": datetime.now(UTC) - ABANDONED_AFTER * 2,
    })  # fmt: skip

    summary = commit(
        penv.db,
        penv.sqs,
        penv.stack.queue_url,
        evaluate(penv.db, _clock(TODAY), RULES),
        "today",
        penv.stack.reminders_queue_url,
    )

    assert summary["planned"]["inquiry_followup"] == 1
    assert len(_nudges(penv)) == 1


def _interleavings() -> st.SearchStrategy[tuple[list[int], list[int]]]:
    """Runs (their planning point, in days before today; repeats are re-runs) and an order of their
    steps: a run's first appearance is its evaluate, its second its commit."""

    def order(days_before: list[int]) -> st.SearchStrategy[tuple[list[int], list[int]]]:
        steps = [i for i in range(len(days_before)) for _ in range(2)]
        return st.permutations(steps).map(lambda p: (days_before, list(p)))

    return st.lists(st.sampled_from([0, 0, 1, 2, 6, 8, 9]), min_size=2, max_size=4).flatmap(order)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=_interleavings())
def test_overlapping_runs_never_nudge_a_buyer_twice_within_the_spacing(
    penv: PlannerEnv, plan: tuple[list[int], list[int]]
) -> None:
    days_before, steps = plan
    for name in ("users", "interactions", "followup_plans", "followup_deliveries", CLAIMS):
        penv.db[name].delete_many({})
    penv.receive_all()
    _hot_lead(penv, TODAY - timedelta(days=max(days_before) + 3))
    points = [TODAY - timedelta(days=d) for d in days_before]
    evaluated: dict[int, Any] = {}
    for run in steps:
        if run not in evaluated:
            evaluated[run] = evaluate(penv.db, _clock(points[run], backfill=days_before[run] > 0), RULES)
        else:
            commit(
                penv.db, penv.sqs, penv.stack.queue_url, evaluated[run], f"run-{run}", penv.stack.reminders_queue_url
            )

    # Independent of the planner's helpers: the nudges that reached the queue, by their IST day.
    sent_days = sorted(datetime.fromisoformat(m["event_id"].rsplit(":", 1)[1]) for m in _nudges(penv))
    assert sent_days, "some run must nudge the quiet buyer"
    assert len(sent_days) == len(set(sent_days)), sent_days
    for earlier, later in itertools.pairwise(sent_days):
        assert later - earlier >= REPEAT, sent_days
