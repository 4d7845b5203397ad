"""The three planning rules as index-backed MongoDB reads (indexes: :mod:`leadflow.mongo_indexes`).

Each rule re-evaluates its whole window on every run instead of looking only at what changed
since the previous run. That is what makes a missed run, a re-run or a backfill harmless: the
next run sees everything a missed one would have seen, and what was planned before has the same
deterministic event id, which :mod:`leadflow.planner.enqueue` finds in ``followup_plans``.

"Already followed up" is read from two places: the delivery ledger ``followup_deliveries``
(what ``whatsapp_followups`` received and sent, from any producer, by ``user_id`` and
``event_type``) and the planner's own ``followup_plans`` (what it put on the queue and may not
be sent yet). See :func:`nudged_recently`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from leadflow.config import DELIVERIES, INTERACTIONS, USERS
from leadflow.followups.contract import EventType
from leadflow.marketing import USER_FIELDS as MARKETING_FIELDS
from leadflow.marketing import marketing_hold
from leadflow.mongo_indexes import PLANS
from leadflow.planner.rules import (
    MAX_SQS_DELAY_SECONDS,
    PlanningClock,
    Rules,
    as_utc,
    days,
    hours,
    ist_date,
    utc_iso,
)

CHUNK = 500
NUDGES = (EventType.COST_SHEET_FOLLOWUP.value, EventType.INQUIRY_FOLLOWUP.value)
# Ledger states meaning "this follow-up went out, or may have": a pending or in-flight event from
# another producer counts too, so the planner never doubles up on it.
DELIVERED_OR_UNDER_WAY = ["sent", "sending", "pending", "unknown_outcome"]
NOT_OPTED_OUT = {"$ne": False}
# What counts as contact with the buyer for "no interaction for 48 h" (role-bounded, so the
# user_role_ts index has tight bounds).
CONTACT_ROLES = ["user", "assistant"]


@dataclass(frozen=True)
class Candidate:
    """One follow-up the rules want on the queue."""

    event_type: str
    event_id: str
    user_id: str  # 24 hex
    body: dict[str, Any]
    due_at: datetime  # when it should reach the buyer
    delay_seconds: int = 0


@dataclass
class RuleResult:
    candidates: list[Candidate] = field(default_factory=list)
    # Why users that matched the query were not planned, by reason (counts only).
    held: Counter[str] = field(default_factory=Counter)


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _both_id_types(oids: Iterable[ObjectId]) -> list[Any]:
    """Interactions store ``user_id`` as an ObjectId or as its hex string: match either."""
    oids = list(oids)
    return oids + [str(o) for o in oids]


def _oid(value: Any) -> ObjectId | None:
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str) and len(value) == 24 and ObjectId.is_valid(value):
        return ObjectId(value)
    return None


def _body(event_type: str, event_id: str, user_id: str, scheduled_at: datetime | None = None) -> dict[str, Any]:
    """The message in the ``whatsapp_followups`` contract (leadflow.followups.contract)."""
    body: dict[str, Any] = {"event_id": event_id, "event_type": event_type, "user_id": user_id}
    if scheduled_at is not None:
        body["scheduled_at"] = utc_iso(scheduled_at)
    return body


def _nudge(event_type: str, event_id: str, user_id: str, now: datetime) -> Candidate:
    """A nudge goes out at once (no delay): only runs in nudge hours plan one."""
    return Candidate(event_type, event_id, user_id, _body(event_type, event_id, user_id), due_at=now)


def _marketing_allowed(users: Iterable[dict[str, Any]], now: datetime, held: Counter[str]) -> Iterator[dict[str, Any]]:
    """The users a nudge (a MARKETING message) may go to now: not opted out of marketing, not
    within Meta's 24 h marketing limit (:mod:`leadflow.marketing`); the others counted in ``held``."""
    for user in users:
        hold = marketing_hold(user, now)
        if hold is None:
            yield user
        else:
            held[hold] += 1


# -- site-visit reminders ----------------------------------------------------------------------


def reminder_event_id(user_id: str, scheduled_at: datetime) -> str:
    return f"{EventType.SITE_VISIT_REMINDER.value}:{user_id}:{utc_iso(scheduled_at)}"


def site_visit_reminders(db: Database, clock: PlanningClock, rules: Rules) -> RuleResult:
    """Scheduled visits whose reminder time falls before the next run's planning point.

    The reminder is due ``minutes_before`` the visit and goes to SQS with DelaySeconds = the time
    left until then (0 when it is already due: a visit booked less than 15 minutes ahead). A visit
    that is over by the wall clock gets none. Index: users ``site_visit_status_at``.
    """
    rule = rules.site_visit_reminder
    before = timedelta(minutes=rule.minutes_before)
    horizon = clock.point + timedelta(minutes=rule.plan_ahead_minutes)
    # SQS delays at most 15 minutes: what is due later is left to a later run.
    horizon = min(horizon, clock.now + timedelta(seconds=MAX_SQS_DELAY_SECONDS))
    result = RuleResult()
    cursor = db[USERS].find(
        {
            "site_visit.status": "scheduled",
            "site_visit.scheduled_at": {"$gt": clock.now, "$lte": horizon + before},
            "whatsapp_opt_in": NOT_OPTED_OUT,
        },
        projection={"site_visit.scheduled_at": 1},
    )
    for user in cursor:
        visit = as_utc(user["site_visit"]["scheduled_at"])
        due = visit - before
        delay = math.ceil((due - clock.now).total_seconds())  # never early: round up
        user_id = str(user["_id"])
        event_id = reminder_event_id(user_id, visit)
        result.candidates.append(
            Candidate(
                event_type=EventType.SITE_VISIT_REMINDER.value,
                event_id=event_id,
                user_id=user_id,
                body=_body(EventType.SITE_VISIT_REMINDER.value, event_id, user_id, visit),
                due_at=max(due, clock.now),
                delay_seconds=min(max(delay, 0), MAX_SQS_DELAY_SECONDS),
            )
        )
    return result


# -- what was already sent or planned ----------------------------------------------------------


def nudged_recently(
    db: Database, user_ids: list[str], event_types: Iterable[str], since: datetime
) -> dict[tuple[str, str], list[tuple[datetime, str]]]:
    """``(user_id, event_type) -> [(when, event_id)]`` for follow-ups since ``since``: in the
    ledger (any producer; when = sent_at, else created_at) and in the planner's own plans (when =
    the planning point that planned it, so a re-run or backfill sees the history as it was then).
    Indexes: ``followup_deliveries.user_type_created``, ``followup_plans.user_type_point``.
    """
    types = list(event_types)
    found: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
    for chunk in _chunks(user_ids):
        ledger = db[DELIVERIES].find(
            {
                "user_id": {"$in": chunk},
                "event_type": {"$in": types},
                "created_at": {"$gte": since},
                "state": {"$in": DELIVERED_OR_UNDER_WAY},
            },
            projection={"user_id": 1, "event_type": 1, "sent_at": 1, "created_at": 1},
        )
        for doc in ledger:
            when = doc.get("sent_at") or doc.get("created_at")
            if isinstance(when, datetime):
                found.setdefault((doc["user_id"], doc["event_type"]), []).append((as_utc(when), str(doc["_id"])))
        plans = db[PLANS].find(
            {"user_id": {"$in": chunk}, "event_type": {"$in": types}, "planning_point": {"$gte": since}},
            projection={"user_id": 1, "event_type": 1, "planning_point": 1},
        )
        for doc in plans:
            found.setdefault((doc["user_id"], doc["event_type"]), []).append(
                (as_utc(doc["planning_point"]), str(doc["_id"]))
            )
    return found


def _others(entries: list[tuple[datetime, str]], event_id: str, after: datetime) -> bool:
    """Any follow-up other than ``event_id`` itself after ``after`` (its own plan means "already
    planned", which the enqueue step counts)."""
    return any(when > after and other != event_id for when, other in entries)


# -- cost-sheet follow-ups ---------------------------------------------------------------------


def cost_sheet_event_id(user_id: str, interaction_id: Any) -> str:
    return f"{EventType.COST_SHEET_FOLLOWUP.value}:{user_id}:{interaction_id}"


def _latest_user_messages(db: Database, oids: list[ObjectId], since: datetime) -> dict[ObjectId, tuple[datetime, Any]]:
    """Each user's latest ``role: user`` interaction since ``since``: (timestamp, _id).
    Index: interactions ``user_role_ts``."""
    latest: dict[ObjectId, tuple[datetime, Any]] = {}
    rows = db[INTERACTIONS].aggregate([
        {"$match": {"user_id": {"$in": _both_id_types(oids)}, "role": "user", "timestamp": {"$gte": since}}},
        {"$sort": {"timestamp": -1}},
        {"$group": {"_id": "$user_id", "timestamp": {"$first": "$timestamp"}, "interaction": {"$first": "$_id"}}},
    ])  # fmt: skip
    for row in rows:
        oid = _oid(row["_id"])
        if oid is None or not isinstance(row.get("timestamp"), datetime):
            continue
        stamp = as_utc(row["timestamp"])
        if oid not in latest or stamp > latest[oid][0]:  # the same user under both id types
            latest[oid] = (stamp, row["interaction"])
    return latest


def cost_sheet_followups(db: Database, clock: PlanningClock, rules: Rules) -> RuleResult:
    """``inquiry_type: cost_sheet`` users whose last message to us is 2 h to 7 days old (as of the
    planning point) and who got no cost-sheet follow-up since that message.

    Driven by the interactions in the window (index ``role_ts_user``, bounded by time, not by how
    many users there ever were), then the users (by ``_id``) and their latest message.
    """
    rule = rules.cost_sheet_followup
    oldest = clock.point - days(rule.max_quiet_days)
    newest = clock.point - hours(rule.min_quiet_hours)
    result = RuleResult()
    writers = db[INTERACTIONS].aggregate([
        {"$match": {"role": "user", "timestamp": {"$gte": oldest, "$lte": newest}}},
        {"$group": {"_id": "$user_id"}},
    ])  # fmt: skip
    oids = list({oid for row in writers if (oid := _oid(row["_id"])) is not None})
    eligible: list[tuple[str, datetime, Any]] = []
    for chunk in _chunks(oids):
        found = db[USERS].find(
            {"_id": {"$in": chunk}, "inquiry_type": "cost_sheet", "whatsapp_opt_in": NOT_OPTED_OUT},
            projection={"_id": 1, **MARKETING_FIELDS},
        )
        users = [u["_id"] for u in _marketing_allowed(found, clock.now, result.held)]
        if not users:
            continue
        latest = _latest_user_messages(db, users, oldest)
        for oid in users:
            stamp, interaction = latest.get(oid, (None, None))
            if stamp is None:
                continue
            if stamp > newest:  # wrote again since: not quiet long enough (yet)
                result.held["cost_sheet_wrote_recently"] += 1
                continue
            eligible.append((str(oid), stamp, interaction))
    sent = nudged_recently(db, [uid for uid, _, _ in eligible], [EventType.COST_SHEET_FOLLOWUP.value], oldest)
    for user_id, stamp, interaction in eligible:
        event_id = cost_sheet_event_id(user_id, interaction)
        if _others(sent.get((user_id, EventType.COST_SHEET_FOLLOWUP.value), []), event_id, stamp):
            result.held["cost_sheet_already_followed_up"] += 1
            continue
        result.candidates.append(_nudge(EventType.COST_SHEET_FOLLOWUP.value, event_id, user_id, clock.now))
    return result


# -- hot-lead nudges ---------------------------------------------------------------------------


def inquiry_event_id(user_id: str, point: datetime) -> str:
    """One id per user and IST day of the planning point: re-runs and backfills of a day give the
    same id; the 7-day spacing itself comes from :func:`nudged_recently`."""
    return f"{EventType.INQUIRY_FOLLOWUP.value}:{user_id}:{ist_date(point)}"


def hot_lead_nudges(db: Database, clock: PlanningClock, rules: Rules, busy: set[str]) -> RuleResult:
    """``ranking == High`` users with no interaction for 48 h and no inquiry follow-up in 7 days.

    ``busy`` holds users already getting a nudge in this run (one nudge per user per run). A nudge
    of ours in the last 48 h counts as contact too, so a cost-sheet follow-up is not chased by an
    inquiry follow-up the next day. Indexes: users ``ranking_1``, interactions ``user_role_ts``.
    """
    rule = rules.inquiry_followup
    quiet_since = clock.point - hours(rule.quiet_hours)
    repeat_since = clock.point - days(rule.repeat_days)
    result = RuleResult()
    quiet: list[str] = []
    cursor = db[USERS].find(
        {"ranking": rule.ranking, "whatsapp_opt_in": NOT_OPTED_OUT},
        projection={"_id": 1, "created_at": 1, **MARKETING_FIELDS},
    )
    users = [u for u in _marketing_allowed(cursor, clock.now, result.held) if isinstance(u["_id"], ObjectId)]
    for chunk in _chunks(users):
        # A lead created less than 48 h ago has not gone quiet, whatever its messages say.
        old_enough = [
            u["_id"]
            for u in chunk
            if not isinstance(u.get("created_at"), datetime) or as_utc(u["created_at"]) <= quiet_since
        ]
        result.held["inquiry_new_lead"] += len(chunk) - len(old_enough)
        if not old_enough:
            continue
        active = db[INTERACTIONS].aggregate([
            {"$match": {"user_id": {"$in": _both_id_types(old_enough)}, "role": {"$in": CONTACT_ROLES},
                        "timestamp": {"$gt": quiet_since}}},
            {"$group": {"_id": "$user_id"}},
        ])  # fmt: skip
        recent = {oid for row in active if (oid := _oid(row["_id"])) is not None}
        result.held["inquiry_not_quiet"] += len(recent & set(old_enough))
        quiet += [str(oid) for oid in old_enough if oid not in recent]
    since = min(repeat_since, quiet_since)
    sent = nudged_recently(db, quiet, NUDGES, since)
    for user_id in quiet:
        event_id = inquiry_event_id(user_id, clock.point)
        if _others(sent.get((user_id, EventType.INQUIRY_FOLLOWUP.value), []), event_id, repeat_since):
            result.held["inquiry_sent_in_repeat_days"] += 1
            continue
        if _others(sent.get((user_id, EventType.COST_SHEET_FOLLOWUP.value), []), event_id, quiet_since):
            result.held["inquiry_other_nudge_recently"] += 1
            continue
        if user_id in busy:
            result.held["one_nudge_per_run"] += 1
            continue
        result.candidates.append(_nudge(EventType.INQUIRY_FOLLOWUP.value, event_id, user_id, clock.now))
    return result
