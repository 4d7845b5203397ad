"""Follow-up numbers per IST day, read from what the DAGs write to MongoDB.

Every query is bounded by time and starts on an index:

* ``followup_deliveries`` (the ledger): one pipeline per state, ``{state: <s>, updated_at >= since}``,
  a range of the ledger's ``state_updated_at`` index (an equality per state rather than one
  ``$in``: the Mongo stand-in plans ``$in`` as a collection scan). An event is counted on the IST
  day it was *created* (first processed); an event created in the window was necessarily updated
  in it too, so the bound loses nothing, and events created earlier but touched since are dropped
  after grouping.
* ``followup_plans``: ``enqueued_at >= since`` (index ``enqueued_at_1``, ``leadflow.mongo_indexes``).
* ``openai_token_budget``: by ``_id`` (the IST day).

MongoDB groups; only one small row per combination of day and outcome comes back, so the page
costs the same whether the ledger holds 1 k or 1 M documents of older days.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from copy import copy
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from leadflow.config import DELIVERIES, REPORT_TIMEZONE
from leadflow.followups.ledger import State
from leadflow.followups.openai_usage import BUDGET_COLLECTION, _price_for
from leadflow.mongo_indexes import PLANS

IST = ZoneInfo(REPORT_TIMEZONE)
DAYS_BACK = 7  # today and the seven IST days before it
# SQS keeps a DLQ message at most 14 days (MessageRetentionPeriod's maximum).
DLQ_RETENTION = timedelta(days=14)
REMINDER = "site_visit_reminder"
EXPIRED = "expired"
NO_CODE = "(none)"
LEDGER_STATES = [state.value for state in State]


@dataclass
class DayStats:
    day: str
    planned: int = 0
    events: int = 0
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    unknown_outcome: int = 0
    in_progress: int = 0  # pending or sending: not decided yet
    fallbacks: int = 0
    reminders_late: int = 0
    reminders_expired: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    dead_lettered_by_reason: Counter[str] = field(default_factory=Counter)
    fallbacks_by_reason: Counter[str] = field(default_factory=Counter)
    billable_by_category: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: float | None = 0.0
    unpriced_models: list[str] = field(default_factory=list)
    budget_tokens_used: int | None = None

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            data[item.name] = dict(sorted(value.items())) if isinstance(value, Counter) else copy(value)
        data["total_tokens"] = self.prompt_tokens + self.completion_tokens
        return data


def ist_days(now: datetime) -> list[date]:
    """Today in IST first, then the seven days before it."""
    today = now.astimezone(IST).date()
    return [today - timedelta(days=back) for back in range(DAYS_BACK + 1)]


def window_start(now: datetime) -> datetime:
    """IST midnight of the oldest day shown, in UTC."""
    return datetime.combine(ist_days(now)[-1], time(0), tzinfo=IST).astimezone(UTC)


def _ist_day(expression: Any) -> dict[str, Any]:
    return {"$dateToString": {"format": "%Y-%m-%d", "date": expression, "timezone": REPORT_TIMEZONE}}


def _is_set(expression: str) -> dict[str, Any]:
    return {"$ne": [{"$ifNull": [expression, None]}, None]}


def deliveries_pipeline(state: str, since: datetime) -> list[dict[str, Any]]:
    return [
        {"$match": {"state": state, "updated_at": {"$gte": since}}},
        {
            "$group": {
                "_id": {
                    "day": _ist_day({"$ifNull": ["$created_at", "$updated_at"]}),
                    "state": "$state",
                    "reason": "$reason",
                    "error_code": "$error_code",
                    "fallback_reason": "$fallback_reason",
                    "reminder": {"$eq": ["$event_type", REMINDER]},
                    "late": {"$gt": [{"$ifNull": ["$late_seconds", 0]}, 0]},
                    "delivered": {
                        "$or": [
                            {"$in": [{"$ifNull": ["$delivery.status", None]}, ["delivered", "read"]]},
                            _is_set("$delivery.delivered_at"),
                        ]
                    },
                    "read": {
                        "$or": [
                            {"$eq": [{"$ifNull": ["$delivery.status", None]}, "read"]},
                            _is_set("$delivery.read_at"),
                        ]
                    },
                    "category": "$delivery.pricing.category",
                    "billable": "$delivery.pricing.billable",
                    "model": "$openai_usage.model",
                },
                "count": {"$sum": 1},
                "prompt_tokens": {"$sum": {"$ifNull": ["$openai_usage.prompt_tokens", 0]}},
                "completion_tokens": {"$sum": {"$ifNull": ["$openai_usage.completion_tokens", 0]}},
            }
        },
    ]


def plans_pipeline(since: datetime) -> list[dict[str, Any]]:
    return [
        {"$match": {"enqueued_at": {"$gte": since}}},
        {"$group": {"_id": _ist_day("$enqueued_at"), "count": {"$sum": 1}}},
    ]


def _add_group(stats: DayStats, key: dict[str, Any], group: dict[str, Any], tokens: dict[str, Counter[str]]) -> None:
    count = int(group["count"])
    state = key.get("state")
    stats.events += count
    if state == State.SENT.value:
        stats.sent += count
    elif state == State.FAILED.value:
        stats.failed += count
        stats.failed_by_code[str(key.get("error_code") or NO_CODE)] += count
    elif state == State.SKIPPED.value:
        stats.skipped += count
        stats.skipped_by_reason[str(key.get("reason") or NO_CODE)] += count
        if key.get("reminder") and key.get("reason") == EXPIRED:
            stats.reminders_expired += count
    elif state == State.DEAD_LETTERED.value:
        stats.dead_lettered += count
        stats.dead_lettered_by_reason[str(key.get("reason") or NO_CODE)] += count
    elif state == State.UNKNOWN_OUTCOME.value:
        stats.unknown_outcome += count
    else:
        stats.in_progress += count
    if key.get("delivered"):
        stats.delivered += count
    if key.get("read"):
        stats.read += count
    if key.get("fallback_reason"):
        stats.fallbacks += count
        stats.fallbacks_by_reason[str(key["fallback_reason"])] += count
    if key.get("reminder") and key.get("late"):
        stats.reminders_late += count
    if key.get("billable") is True:
        stats.billable_by_category[str(key.get("category") or NO_CODE)] += count
    if key.get("model"):
        tokens["prompt"][str(key["model"])] += int(group["prompt_tokens"])
        tokens["completion"][str(key["model"])] += int(group["completion_tokens"])


def _price(stats: DayStats, tokens: dict[str, Counter[str]], prices: dict[str, dict[str, float]]) -> None:
    stats.prompt_tokens = sum(tokens["prompt"].values())
    stats.completion_tokens = sum(tokens["completion"].values())
    cost = 0.0
    for model in sorted(set(tokens["prompt"]) | set(tokens["completion"])):
        price = _price_for(prices, model)
        if price is None:
            stats.unpriced_models.append(model)
            continue
        cost += (tokens["prompt"][model] * price["input"] + tokens["completion"][model] * price["output"]) / 1e6
    stats.estimated_cost_usd = None if stats.unpriced_models else round(cost, 6)


def day_stats(db: Any, now: datetime, prices: dict[str, dict[str, float]]) -> list[DayStats]:
    """Today and the seven IST days before it, newest first."""
    since = window_start(now)
    days = {day.isoformat(): DayStats(day.isoformat()) for day in ist_days(now)}
    tokens: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: {"prompt": Counter(), "completion": Counter()})
    for state in LEDGER_STATES:
        for group in db[DELIVERIES].aggregate(deliveries_pipeline(state, since)):
            key = group["_id"]
            if key.get("day") in days:
                _add_group(days[key["day"]], key, group, tokens[key["day"]])
    for group in db[PLANS].aggregate(plans_pipeline(since)):
        if group["_id"] in days:
            days[group["_id"]].planned += int(group["count"])
    for doc in db[BUDGET_COLLECTION].find({"_id": {"$in": list(days)}}, projection={"tokens": 1}):
        days[doc["_id"]].budget_tokens_used = int(doc.get("tokens") or 0)
    for name, stats in days.items():
        _price(stats, tokens[name], prices)
    return list(days.values())


def dead_letters_by_reason(db: Any, now: datetime) -> dict[str, int]:
    """Events the ledger holds as dead-lettered (and not redriven since) by reason: what the
    follow-ups DLQ holds by ``reason_code``, as far as SQS still keeps it."""
    pipeline = [
        {"$match": {"state": State.DEAD_LETTERED.value, "updated_at": {"$gte": now - DLQ_RETENTION}}},
        {"$group": {"_id": "$reason", "count": {"$sum": 1}}},
    ]
    counts = {str(g["_id"] or NO_CODE): int(g["count"]) for g in db[DELIVERIES].aggregate(pipeline)}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
