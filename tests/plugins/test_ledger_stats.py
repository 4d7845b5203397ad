"""The Leadflow page's numbers equal a plain count over the ledger, whatever the ledger holds.

Hypothesis generates ledgers (states, reasons, receipts, pricing, OpenAI usage, late/expired
reminders; created at any time around the 8-day window and its IST midnights; touched later) and
plans; the page's per-day figures are checked against a count written here with ``zoneinfo`` and
``collections.Counter`` — not against the plugin's pipeline or helpers. The stand-in plays MongoDB.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.messaging.ledger import INDEXES as LEDGER_INDEXES
from leadflow.mongo_indexes import ensure_indexes

KOLKATA = ZoneInfo("Asia/Kolkata")
NOW = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # 06:30 IST: today has begun 6.5 h ago
PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}, "gpt-4o": {"input": 2.50, "output": 10.00}}
STATES = ["pending", "sending", "sent", "skipped", "dead_lettered", "failed", "unknown_outcome"]
REASONS = [None, "expired", "superseded", "invalid_phone", "opted_out"]
CODES = [None, "131026", "131047", "470"]
FALLBACKS = [None, None, "openai_error", "budget_exhausted"]
TYPES = ["site_visit_reminder", "cost_sheet_followup", "inquiry_followup"]
RECEIPTS = [None, "sent", "delivered", "read", "failed"]
CATEGORIES = ["utility", "marketing", "service"]
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-9-unpriced"]


@st.composite
def ledger_doc(draw: st.DrawFn, n: int) -> dict[str, Any]:
    # Created from 10 days before NOW to NOW, to the minute (IST midnight is 18:30 UTC).
    created = NOW - timedelta(minutes=draw(st.integers(0, 10 * 24 * 60)))
    updated = min(NOW, created + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60))))
    doc: dict[str, Any] = {
        "_id": f"event-{n}",
        "event_type": draw(st.sampled_from(TYPES)),
        "user_id": str(n),
        "state": draw(st.sampled_from(STATES)),
        "reason": draw(st.sampled_from(REASONS)),
        "error_code": draw(st.sampled_from(CODES)),
        "fallback_reason": draw(st.sampled_from(FALLBACKS)),
        "created_at": created,
        "updated_at": updated,
    }
    if draw(st.booleans()):
        doc["late_seconds"] = draw(st.sampled_from([0, 30, 600]))
    receipt = draw(st.sampled_from(RECEIPTS))
    if receipt:
        delivery: dict[str, Any] = {"status": receipt}
        if receipt == "read" and draw(st.booleans()):
            delivery["delivered_at"] = updated  # read implies delivered, stamped or not
        if draw(st.booleans()):
            delivery["pricing"] = {
                "category": draw(st.sampled_from(CATEGORIES)),
                "type": "regular",
                "pricing_model": "PMP",
                "billable": draw(st.booleans()),
            }
        doc["delivery"] = delivery
    if draw(st.booleans()):
        prompt, completion = draw(st.integers(0, 900)), draw(st.integers(0, 300))
        doc["openai_usage"] = {
            "model": draw(st.sampled_from(MODELS)),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return doc


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[datetime]]:
    size = draw(st.integers(0, 30))
    docs = [draw(ledger_doc(n)) for n in range(size)]
    plans = [NOW - timedelta(minutes=draw(st.integers(0, 10 * 24 * 60))) for _ in range(draw(st.integers(0, 8)))]
    return docs, plans


def shown_days() -> list[date]:
    today = NOW.astimezone(KOLKATA).date()
    return [today - timedelta(days=k) for k in range(8)]


def expected(docs: list[dict[str, Any]], plans: list[datetime]) -> dict[str, dict[str, Any]]:
    """A straight count: each event on the IST date of its creation, if that date is shown."""
    days = {day.isoformat(): Counter() for day in shown_days()}
    breakdowns: dict[str, dict[str, Counter]] = {day: {} for day in days}
    tokens: dict[str, dict[str, list[int]]] = {day: {} for day in days}
    for doc in docs:
        day = doc["created_at"].astimezone(KOLKATA).date().isoformat()
        if day not in days:
            continue
        count, parts = days[day], breakdowns[day]
        state, delivery = doc["state"], doc.get("delivery") or {}
        count["events"] += 1
        if state in ("pending", "sending"):
            count["in_progress"] += 1
        else:
            count[state] += 1
        label = {"failed": "error_code", "skipped": "reason", "dead_lettered": "reason"}.get(state)
        if label:
            name = {"failed": "failed_by_code", "skipped": "skipped_by_reason"}.get(state, "dead_lettered_by_reason")
            parts.setdefault(name, Counter())[doc[label] or "(none)"] += 1
        if delivery.get("status") in ("delivered", "read") or delivery.get("delivered_at"):
            count["delivered"] += 1
        if delivery.get("status") == "read":
            count["read"] += 1
        if doc["fallback_reason"]:
            count["fallbacks"] += 1
            parts.setdefault("fallbacks_by_reason", Counter())[doc["fallback_reason"]] += 1
        reminder = doc["event_type"] == "site_visit_reminder"
        if reminder and doc.get("late_seconds", 0) > 0:
            count["reminders_late"] += 1
        if reminder and state == "skipped" and doc["reason"] == "expired":
            count["reminders_expired"] += 1
        pricing = delivery.get("pricing") or {}
        if pricing.get("billable") is True:
            parts.setdefault("billable_by_category", Counter())[pricing["category"]] += 1
        usage = doc.get("openai_usage")
        if usage:
            used = tokens[day].setdefault(usage["model"], [0, 0])
            used[0] += usage["prompt_tokens"]
            used[1] += usage["completion_tokens"]
    for enqueued in plans:
        day = enqueued.astimezone(KOLKATA).date().isoformat()
        if day in days:
            days[day]["planned"] += 1
    result = {}
    for day, count in days.items():
        cost: float | None = 0.0
        for model, (prompt, completion) in tokens[day].items():
            if model not in PRICES:
                cost = None
                break
            cost += (prompt * PRICES[model]["input"] + completion * PRICES[model]["output"]) / 1_000_000
        result[day] = {
            "counts": count,
            "breakdowns": {name: dict(c) for name, c in breakdowns[day].items()},
            "total_tokens": sum(p + c for p, c in tokens[day].values()),
            "estimated_cost_usd": None if cost is None else round(cost, 6),
        }
    return result


COUNTED = [
    "planned", "events", "sent", "delivered", "read", "failed", "skipped", "dead_lettered",
    "unknown_outcome", "in_progress", "fallbacks", "reminders_late", "reminders_expired",
]  # fmt: skip
BREAKDOWNS = [
    "failed_by_code", "skipped_by_reason", "dead_lettered_by_reason", "fallbacks_by_reason", "billable_by_category"
]  # fmt: skip


@pytest.fixture(scope="module")
def db(stack) -> Any:
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        client.drop_database("plugin_stats")
        database = client["plugin_stats"]
        ensure_indexes(database)
        database.followup_deliveries.create_indexes(LEDGER_INDEXES)
        yield database
        client.drop_database("plugin_stats")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ledgers())
def test_each_day_counts_exactly_the_events_created_that_ist_day(db, generated) -> None:
    from leadflow_ui.ledger_stats import day_stats

    docs, plans = generated
    db.followup_deliveries.delete_many({})
    db.followup_plans.delete_many({})
    if docs:
        db.followup_deliveries.insert_many(docs)
    if plans:
        db.followup_plans.insert_many([{"_id": f"plan-{n}", "enqueued_at": at} for n, at in enumerate(plans)])

    shown = {day.day: day.as_dict() for day in day_stats(db, NOW, PRICES)}
    want = expected(docs, plans)
    assert list(shown) == [day.isoformat() for day in shown_days()]
    for day, figures in want.items():
        got = shown[day]
        assert {name: got[name] for name in COUNTED} == {name: figures["counts"][name] for name in COUNTED}, day
        assert {name: got[name] for name in BREAKDOWNS if got[name]} == figures["breakdowns"], day
        assert got["total_tokens"] == figures["total_tokens"], day
        assert got["estimated_cost_usd"] == pytest.approx(figures["estimated_cost_usd"]), day


def test_every_query_starts_on_an_index(db) -> None:
    """Bounded and index-backed, so the page does not slow down as the ledger grows."""
    from leadflow_ui.ledger_stats import LEDGER_STATES, deliveries_query, plans_query

    since = NOW - timedelta(days=8)
    queries = [(db.followup_deliveries, deliveries_query(state, since)) for state in LEDGER_STATES]
    queries.append((db.followup_plans, plans_query(since)))
    dead_letters = [{"$match": {"state": "dead_lettered", "updated_at": {"$gte": since}}}]
    for collection, query in queries:
        plan = str(collection.find(query).explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan, (collection.name, query, plan)
        assert "COLLSCAN" not in plan, (collection.name, query, plan)
    plan = str(db.command("aggregate", db.followup_deliveries.name, pipeline=dead_letters, explain=True))
    assert "IXSCAN" in plan
