"""Putting planned follow-ups on the queue, each once: the ``followup_plans`` record and SQS.

``followup_plans`` holds one document per event the planner enqueued, ``_id`` = the event id
(deterministic, see :mod:`leadflow.planner.candidates`). A candidate whose id is there is counted
as *already planned* and not sent again, so overlapping windows, re-runs, clears and backfills
put each event on the queue once.

Order of writes: SQS first, then the plan document. A crash in between means the next run sends
the event again, and the delivery ledger (keyed by the same event id) sends it to the buyer at
most once. The reverse order could record a plan whose message never reached the queue: a lost
reminder, which is worse than a duplicate message the ledger absorbs.

Which queue: time-critical events (site-visit reminders) go to their own queue,
``leadflow-reminders``, which its own consumer (``whatsapp_reminders``) drains, so a reminder
never waits behind a burst of nudges on ``leadflow-followups``; their body carries ``due_at``,
from which the consumer records the deadline and any lateness (:mod:`leadflow.followups.deadlines`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from leadflow.followups.contract import EventType
from leadflow.planner.candidates import Candidate
from leadflow.planner.rules import PlanningClock

log = logging.getLogger(__name__)

SQS_BATCH = 10  # the most SendMessageBatch accepts
PRODUCER = "followup_planner"
DUPLICATE_KEY = 11000


class EnqueueError(RuntimeError):
    """SQS refused some messages; the task fails (and retries) after recording the rest."""


@dataclass
class EnqueueResult:
    enqueued: list[Candidate] = field(default_factory=list)
    already_planned: list[Candidate] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # event id -> SQS error code
    sqs_calls: int = 0


def already_planned(plans: Collection, event_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        found |= {doc["_id"] for doc in plans.find({"_id": {"$in": chunk}}, projection={"_id": 1})}
    return found


def is_time_critical(candidate: Candidate) -> bool:
    return candidate.event_type == EventType.SITE_VISIT_REMINDER.value


def message_body(candidate: Candidate) -> dict[str, Any]:
    if not is_time_critical(candidate):
        return candidate.body
    return {**candidate.body, "due_at": candidate.due_at.astimezone(UTC).isoformat().replace("+00:00", "Z")}


def _entry(index: int, candidate: Candidate) -> dict[str, Any]:
    return {
        "Id": str(index),
        "MessageBody": json.dumps(message_body(candidate), separators=(",", ":")),
        "DelaySeconds": candidate.delay_seconds,
        "MessageAttributes": {
            "producer": {"DataType": "String", "StringValue": PRODUCER},
            "event_type": {"DataType": "String", "StringValue": candidate.event_type},
        },
    }


def _record(
    plans: Collection, sent: list[tuple[Candidate, str]], clock: PlanningClock, run_id: str, at: datetime
) -> None:
    docs = [
        {
            "_id": candidate.event_id,
            "event_type": candidate.event_type,
            "user_id": candidate.user_id,
            "planning_point": clock.point,
            "run_id": run_id,
            "enqueued_at": at,
            "due_at": candidate.due_at,
            "delay_seconds": candidate.delay_seconds,
            "sqs_message_id": message_id,
            **({"scheduled_at": candidate.body["scheduled_at"]} if "scheduled_at" in candidate.body else {}),
        }
        for candidate, message_id in sent
    ]
    if not docs:
        return
    try:
        plans.insert_many(docs, ordered=False)
    except BulkWriteError as error:
        # Another run recorded the same event meanwhile (e.g. a backfill next to the on-time run):
        # its record stands; the ledger absorbs the second message.
        others = [e for e in error.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if others:
            raise


def enqueue(
    sqs: Any,
    queue_url: str,
    plans: Collection,
    candidates: list[Candidate],
    clock: PlanningClock,
    run_id: str,
    now: datetime,
    reminders_queue_url: str,
) -> EnqueueResult:
    """Send the candidates not planned before (10 per SendMessageBatch, time-critical ones to
    ``reminders_queue_url``, the rest to ``queue_url``), then record them."""
    result = EnqueueResult()
    known = already_planned(plans, [c.event_id for c in candidates])
    fresh: list[Candidate] = []
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.event_id in known or candidate.event_id in seen:
            result.already_planned.append(candidate)
        else:
            seen.add(candidate.event_id)
            fresh.append(candidate)
    reminders = [c for c in fresh if is_time_critical(c)]
    nudges = [c for c in fresh if not is_time_critical(c)]
    # Reminders first: a run that fails half-way has at least put the time-critical ones out.
    for url, group in ((reminders_queue_url, reminders), (queue_url, nudges)):
        _send_all(sqs, url, group, plans, clock, run_id, now, result)
    return result


def _send_all(
    sqs: Any,
    queue_url: str,
    fresh: list[Candidate],
    plans: Collection,
    clock: PlanningClock,
    run_id: str,
    now: datetime,
    result: EnqueueResult,
) -> None:
    for start in range(0, len(fresh), SQS_BATCH):
        batch = fresh[start : start + SQS_BATCH]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=[_entry(i, c) for i, c in enumerate(batch)])
        result.sqs_calls += 1
        sent = [(batch[int(ok["Id"])], ok["MessageId"]) for ok in response.get("Successful") or []]
        _record(plans, sent, clock, run_id, now)
        result.enqueued += [candidate for candidate, _ in sent]
        for failure in response.get("Failed") or []:
            candidate = batch[int(failure["Id"])]
            result.failed[candidate.event_id] = str(failure.get("Code"))
            log.error("SQS refused event %s: %s (sender fault: %s)", candidate.event_id, failure.get("Code"),
                      failure.get("SenderFault"))  # fmt: skip
