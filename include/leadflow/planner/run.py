"""One planning run: evaluate the rules as of the planning point, enqueue what is new, summarise.

The summary (the task's return value, i.e. XCom, and its log line) holds counts and event ids
only: planned and already planned per rule, why matching users were held back, the reminder
delays and the SQS calls.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from leadflow.followups.contract import EventType
from leadflow.mongo_indexes import PLANS
from leadflow.planner.candidates import (
    Candidate,
    RuleResult,
    cost_sheet_followups,
    hot_lead_nudges,
    site_visit_reminders,
)
from leadflow.planner.claims import HELD_REASON, claim_nudges
from leadflow.planner.enqueue import EnqueueError, enqueue
from leadflow.planner.rules import PlanningClock, Rules

log = logging.getLogger(__name__)

RULE_NAMES = [e.value for e in EventType]
MAX_IDS = 50


@dataclass
class Evaluation:
    """What the rules want as of the planning point (read only; nothing written yet)."""

    clock: PlanningClock
    rules: Rules
    nudges_allowed: bool
    results: dict[str, RuleResult]


def evaluate(db: Database, clock: PlanningClock, rules: Rules) -> Evaluation:
    results: dict[str, RuleResult] = {EventType.SITE_VISIT_REMINDER.value: site_visit_reminders(db, clock, rules)}
    nudges_allowed = clock.nudges_allowed(rules.nudge_hours_ist)
    if nudges_allowed:
        cost = cost_sheet_followups(db, clock, rules)
        results[EventType.COST_SHEET_FOLLOWUP.value] = cost
        busy = {c.user_id for c in cost.candidates}
        results[EventType.INQUIRY_FOLLOWUP.value] = hot_lead_nudges(db, clock, rules, busy)
    return Evaluation(clock, rules, nudges_allowed, results)


def plan(
    db: Database,
    sqs: Any,
    queue_url: str,
    clock: PlanningClock,
    rules: Rules,
    run_id: str,
    reminders_queue_url: str,
) -> dict[str, Any]:
    """Evaluate the rules, enqueue new events (reminders on ``reminders_queue_url``, nudges on
    ``queue_url``); return the run summary. Raises :class:`EnqueueError` after recording what did
    go out if SQS refused any message (so the task retries)."""
    return commit(db, sqs, queue_url, evaluate(db, clock, rules), run_id, reminders_queue_url)


def commit(
    db: Database, sqs: Any, queue_url: str, evaluation: Evaluation, run_id: str, reminders_queue_url: str
) -> dict[str, Any]:
    """Claim the nudges, enqueue what is new, summarise (a run evaluated by :func:`evaluate`).

    Apart so that a test can let two runs evaluate before either commits, as overlapping runs do.
    """
    clock, rules, nudges_allowed, results = (
        evaluation.clock, evaluation.rules, evaluation.nudges_allowed, evaluation.results,
    )  # fmt: skip
    now = datetime.now(UTC)
    candidates: list[Candidate] = [c for r in results.values() for c in r.candidates]
    candidates, claimed_elsewhere = claim_nudges(db, candidates, clock, rules, now)
    if claimed_elsewhere:
        results[EventType.INQUIRY_FOLLOWUP.value].held[HELD_REASON] += claimed_elsewhere
    outcome = enqueue(sqs, queue_url, db[PLANS], candidates, clock, run_id, now, reminders_queue_url)

    def per_rule(items: list[Candidate]) -> dict[str, int]:
        return {name: sum(1 for c in items if c.event_type == name) for name in RULE_NAMES}

    reminders = [c for c in outcome.enqueued if c.event_type == EventType.SITE_VISIT_REMINDER.value]
    hours = rules.nudge_hours_ist
    summary: dict[str, Any] = {
        **clock.as_dict(),
        "nudges": "allowed"
        if nudges_allowed
        else (
            f"waiting: outside {hours.start:%H:%M}-{hours.end:%H:%M} IST"
            + (" (by the wall clock)" if hours.contains(clock.point) else "")
        ),
        "planned": per_rule(outcome.enqueued),
        "already_planned": per_rule(outcome.already_planned),
        "held": dict(sum((r.held for r in results.values()), Counter())),
        "failed": len(outcome.failed),
        "reminder_delay_seconds": sorted(c.delay_seconds for c in reminders)[:MAX_IDS],
        "sqs_calls": outcome.sqs_calls,
        "planned_event_ids": [c.event_id for c in outcome.enqueued][:MAX_IDS],
    }
    log.info("Planner run summary: %s", summary)
    if outcome.failed:
        raise EnqueueError(
            f"SQS refused {len(outcome.failed)} event(s) ({sorted(set(outcome.failed.values()))}); "
            "the rest were enqueued and recorded, a retry re-plans the refused ones"
        )
    return summary


def plan_step(context: dict[str, Any]) -> dict[str, Any]:
    """The DAG task's body: wire the run's context, Variables and connections to :func:`plan`."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Variable

    from leadflow.config import AWS_CONN_ID, VAR_QUEUE_URL, VAR_REMINDERS_QUEUE_URL
    from leadflow.mongo import get_database
    from leadflow.mongo_indexes import ensure_indexes
    from leadflow.planner.rules import load_rules

    run = context["dag_run"]
    clock = PlanningClock.of_run(
        context.get("data_interval_end"),
        getattr(run, "run_after", None),
        datetime.now(UTC),
        backfill=str(getattr(run, "run_type", "")).lower().endswith("backfill"),
    )
    rules = load_rules()
    db = get_database()
    ensure_indexes(db)
    sqs = SqsHook(aws_conn_id=AWS_CONN_ID).conn
    queues = Variable.get(VAR_QUEUE_URL), Variable.get(VAR_REMINDERS_QUEUE_URL)
    return plan(db, sqs, queues[0], clock, rules, run.run_id, reminders_queue_url=queues[1])
