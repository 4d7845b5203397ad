"""One hot-lead nudge per buyer whatever planner runs overlap: an atomic claim in MongoDB.

A hot-lead nudge's event id names the IST day of the planning point
(:func:`leadflow.planner.candidates.inquiry_event_id`), so a re-run or a clear of a day plans the
same event. A backfill of yesterday running beside today's run does not: its id names another
day, and both runs read ``followup_plans`` and the ledger before either writes, so each would
plan its own nudge for the same buyer.

Before enqueueing, each hot-lead candidate claims its buyer in ``followup_nudge_claims``
(``_id`` = ``inquiry_followup:<user_id>``; the claiming ``event_id``, ``planning_point``,
``claimed_at``). The claim is one conditional upsert, so of two overlapping runs exactly one
wins; the other holds the buyer (``inquiry_claimed_by_another_run`` in its summary). A claim is
taken when there is none, when it is the candidate's own (a re-run or a retry of the same day),
or when it is older than the repeat spacing (``repeat_days``, by planning point: the next nudge of
the rule). A claim whose event never reached the queue (the run failed before recording it in
``followup_plans``) is released after :data:`ABANDONED_AFTER`, so a failed run cannot silence a
buyer for a week.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from leadflow.followups.contract import EventType
from leadflow.mongo_indexes import PLANS
from leadflow.planner.candidates import Candidate
from leadflow.planner.rules import PlanningClock, Rules, as_utc, days

log = logging.getLogger(__name__)

CLAIMS = "followup_nudge_claims"
HELD_REASON = "inquiry_claimed_by_another_run"
# Longer than a planner run with all its retries (15 s, 30 s, 60 s backoff) takes.
ABANDONED_AFTER = timedelta(hours=1)
CLAIMED = (EventType.INQUIRY_FOLLOWUP.value,)


def claim_key(candidate: Candidate) -> str:
    return f"{candidate.event_type}:{candidate.user_id}"


def _claim(claims: Collection, candidate: Candidate, point: datetime, spacing: timedelta, now: datetime) -> bool:
    fields = {"event_id": candidate.event_id, "planning_point": point, "claimed_at": now}
    takeable: list[dict[str, Any]] = [
        {"event_id": candidate.event_id},
        {"planning_point": {"$lte": point - spacing}},
    ]
    try:
        claims.update_one({"_id": claim_key(candidate), "$or": takeable}, {"$set": fields}, upsert=True)
        return True
    except DuplicateKeyError:  # claimed by another event of this buyer, within the spacing
        return False


def _release_abandoned(db: Database, candidate: Candidate, now: datetime) -> bool:
    """Drop the buyer's claim if its event never reached ``followup_plans`` within ABANDONED_AFTER."""
    claims = db[CLAIMS]
    held = claims.find_one({"_id": claim_key(candidate)})
    if held is None or held.get("event_id") == candidate.event_id:
        return False
    claimed_at = held.get("claimed_at")
    if not isinstance(claimed_at, datetime) or as_utc(claimed_at) > now - ABANDONED_AFTER:
        return False
    if db[PLANS].count_documents({"_id": held["event_id"]}, limit=1):
        return False
    log.warning("Claim of %s by %s never reached the queue; released", claim_key(candidate), held["event_id"])
    released = claims.delete_one({"_id": held["_id"], "event_id": held["event_id"], "claimed_at": claimed_at})
    return released.deleted_count == 1


def claim_nudges(
    db: Database, candidates: list[Candidate], clock: PlanningClock, rules: Rules, now: datetime
) -> tuple[list[Candidate], int]:
    """The candidates this run may enqueue, and how many hot-lead nudges another run holds."""
    spacing = days(rules.inquiry_followup.repeat_days)
    kept: list[Candidate] = []
    held = 0
    for candidate in candidates:
        if candidate.event_type not in CLAIMED:
            kept.append(candidate)
            continue
        won = _claim(db[CLAIMS], candidate, clock.point, spacing, now)
        if not won and _release_abandoned(db, candidate, now):
            won = _claim(db[CLAIMS], candidate, clock.point, spacing, now)
        if won:
            kept.append(candidate)
        else:
            held += 1
    return kept, held
