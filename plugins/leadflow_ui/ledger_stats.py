"""Follow-up numbers per IST day, read from what the DAGs write to MongoDB.

Every query is bounded by time and starts on an index:

* ``followup_deliveries`` (the ledger): one range per state, ``{state: <s>, updated_at >= since}``
  on the ledger's ``state_updated_at`` index (an equality per state rather than one ``$in``: the
  Mongo stand-in plans ``$in`` as a collection scan). An event is counted on the IST day it was
  *created* (first processed); an event created in the window was necessarily updated in it too,
  so the bound loses nothing, and events created earlier but touched since are left out here.
* ``followup_plans``: ``enqueued_at >= since`` (index ``enqueued_at_1``, ``leadflow.mongo_indexes``).
* ``openai_token_budget``: by ``_id`` (the IST day).

Only the fields counted come back (a projection of a few small fields), and they are counted
here: the stand-in evaluates a ``$group`` three times slower than it returns the documents, and
for MongoDB itself a week of follow-ups is a few thousand small documents either way. The cost
follows the events of the shown week, never the size of the ledger.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from copy import copy
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from leadflow.config import DELIVERIES, REPORT_TIMEZONE
from leadflow.followups.openai_usage import BUDGET_COLLECTION, _price_for
from leadflow.messaging.ledger import State
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


# What the page counts of a ledger document; nothing else leaves MongoDB (no text, no number).
LEDGER_FIELDS = [
    "created_at", "updated_at", "state", "reason", "error_code", "fallback_reason", "event_type", "late_seconds",
    "delivery.status", "delivery.delivered_at", "delivery.read_at", "delivery.pricing.category",
    "delivery.pricing.billable", "openai_usage.model", "openai_usage.prompt_tokens", "openai_usage.completion_tokens",
]  # fmt: skip
BATCH_SIZE = 5_000


def deliveries_query(state: str, since: datetime) -> dict[str, Any]:
    return {"state": state, "updated_at": {"$gte": since}}


def plans_query(since: datetime) -> dict[str, Any]:
    return {"enqueued_at": {"$gte": since}}


def _ist_date(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(IST).date().isoformat()


def _count(stats: DayStats, doc: dict[str, Any], tokens: dict[str, Counter[str]]) -> None:
    state, reason = doc.get("state"), doc.get("reason")
    delivery = doc.get("delivery") or {}
    reminder = doc.get("event_type") == REMINDER
    stats.events += 1
    if state == State.SENT.value:
        stats.sent += 1
    elif state == State.FAILED.value:
        stats.failed += 1
        stats.failed_by_code[str(doc.get("error_code") or NO_CODE)] += 1
    elif state == State.SKIPPED.value:
        stats.skipped += 1
        stats.skipped_by_reason[str(reason or NO_CODE)] += 1
        stats.reminders_expired += reminder and reason == EXPIRED
    elif state == State.DEAD_LETTERED.value:
        stats.dead_lettered += 1
        stats.dead_lettered_by_reason[str(reason or NO_CODE)] += 1
    elif state == State.UNKNOWN_OUTCOME.value:
        stats.unknown_outcome += 1
    else:
        stats.in_progress += 1
    status = delivery.get("status")
    stats.delivered += status in ("delivered", "read") or delivery.get("delivered_at") is not None
    stats.read += status == "read" or delivery.get("read_at") is not None
    if doc.get("fallback_reason"):
        stats.fallbacks += 1
        stats.fallbacks_by_reason[str(doc["fallback_reason"])] += 1
    stats.reminders_late += reminder and (doc.get("late_seconds") or 0) > 0
    pricing = delivery.get("pricing") or {}
    if pricing.get("billable") is True:
        stats.billable_by_category[str(pricing.get("category") or NO_CODE)] += 1
    usage = doc.get("openai_usage") or {}
    if usage.get("model"):
        tokens["prompt"][str(usage["model"])] += int(usage.get("prompt_tokens") or 0)
        tokens["completion"][str(usage["model"])] += int(usage.get("completion_tokens") or 0)


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
        found = db[DELIVERIES].find(
            deliveries_query(state, since), projection=dict.fromkeys(LEDGER_FIELDS, 1), batch_size=BATCH_SIZE
        )
        for doc in found:
            day = _ist_date(doc.get("created_at") or doc.get("updated_at"))
            if day in days:
                _count(days[day], doc, tokens[day])
    for plan in db[PLANS].find(plans_query(since), projection={"enqueued_at": 1}, batch_size=BATCH_SIZE):
        day = _ist_date(plan.get("enqueued_at"))
        if day in days:
            days[day].planned += 1
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
