"""OpenAI token usage: what each reply cost, per-run totals, and a daily token budget.

**Usage.** Every chat completion's ``usage.prompt_tokens`` / ``completion_tokens`` is added up per
model (:class:`UsageMeter`), stored on the event's ledger document (``openai_usage``), and reported
in the ``whatsapp_followups`` run summary with an estimated cost: the price per 1 M tokens per
model comes from Variable ``leadflow_openai_price_per_million_tokens`` (JSON, merged over
:data:`DEFAULT_PRICES`; a model without a price is reported with ``"estimated_cost_usd": null``
and named under ``unpriced_models``).

**Daily budget.** Variable ``leadflow_openai_daily_token_budget`` (tokens per IST day; unset or
empty = unlimited). The count lives in MongoDB (``openai_token_budget``, one document per IST
day, ``_id`` = ``YYYY-MM-DD``), so it holds across runs, retries and workers. Before each call
the meter *reserves* the most the call can cost (the prompt's estimated size plus ``max_tokens``)
with one conditional ``$inc``: the reservation only succeeds while it fits under the budget, so
concurrent threads or runs can never overshoot it. After the reply the reservation is replaced
by the real usage (a failed call gives it back). A refused reservation means the budget is spent:
the message uses the template text (``fallback_reason: budget_exhausted``, counted as
``fallback_budget``), the day's document is stamped ``exhausted_at``, and the task sends one
alert per day (:func:`publish_budget_alert`, claimed atomically with ``alerted_at``). The next IST
day has a fresh document, so its first run uses OpenAI again.

**Out of credit.** OpenAI's 429 ``insufficient_quota`` (the account has no credit left, which
waiting does not fix) is recorded on the same day's document (``insufficient_quota_at``); the
messages use the template text and the task sends one alert per IST day
(:func:`publish_quota_alert`, claimed with ``insufficient_quota_alerted_at``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from leadflow.config import REPORT_TIMEZONE

log = logging.getLogger(__name__)

IST = ZoneInfo(REPORT_TIMEZONE)
VAR_DAILY_TOKEN_BUDGET = "leadflow_openai_daily_token_budget"  # noqa: S105 - a Variable name
VAR_PRICES = "leadflow_openai_price_per_million_tokens"
BUDGET_COLLECTION = "openai_token_budget"
FALLBACK_BUDGET = "budget_exhausted"
# USD per 1 M tokens (OpenAI's list prices for the models the project uses).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    # Reasoning models: completion tokens include the hidden reasoning, billed as output.
    "o3-mini": {"input": 1.10, "output": 4.40},
    "o4-mini": {"input": 1.10, "output": 4.40},
    "gpt-5": {"input": 1.25, "output": 10.00},
    "gpt-5-mini": {"input": 0.25, "output": 2.00},
}
# Chat formatting overhead OpenAI documents for the gpt-4o family: ~3 tokens per message plus 3
# to prime the reply. Only used to size a reservation, never reported as usage.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
CHARS_PER_TOKEN = 4
SETTLE_EVERY = 50  # calls whose usage is written together when no limit is set (DailyBudget.settle)


class BudgetExhausted(Exception):
    """The day's token budget cannot cover another call: use the template text."""

    reason = FALLBACK_BUDGET


def ist_day(now: datetime) -> str:
    """The budget day: the IST calendar date (IST midnight is 18:30 UTC)."""
    return now.astimezone(IST).date().isoformat()


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """An upper-bound-ish size of one call: the prompt at ~4 characters a token, plus the overhead
    and the most the reply may use. Over-estimating only makes the budget stop a call early."""
    prompt = sum(math.ceil(len(str(m.get("content") or "")) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in messages)
    return prompt + REPLY_PRIMING_TOKENS + max_tokens


@dataclass(frozen=True)
class Usage:
    model: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def usage_of(response: Any, model: str) -> Usage | None:
    """The reply's ``usage`` (None when the reply carries none, which OpenAI's never lacks)."""
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(str(getattr(response, "model", None) or model), prompt, completion)


def parse_prices(raw: str | dict[str, Any] | None) -> dict[str, dict[str, float]]:
    prices = {model: dict(p) for model, p in DEFAULT_PRICES.items()}
    data = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw if isinstance(raw, dict) else {})
    for model, price in data.items():
        if not isinstance(price, dict) or not {"input", "output"} <= set(price):
            raise ValueError(
                f"Variable {VAR_PRICES}: {model!r} needs {{'input': ..., 'output': ...}} USD per 1M tokens"
            )
        prices[str(model)] = {"input": float(price["input"]), "output": float(price["output"])}
    return prices


def parse_budget(raw: Any) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    value = int(str(raw).strip())
    if value < 0:
        raise ValueError(f"Variable {VAR_DAILY_TOKEN_BUDGET} must be >= 0, got {value}")
    return value


def _price_for(prices: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    """Exact model id, else the longest priced id it starts with (``gpt-4o-mini-2024-07-18``)."""
    if model in prices:
        return prices[model]
    matches = [m for m in prices if model.startswith(m + "-")]
    return prices[max(matches, key=len)] if matches else None


class DailyBudget:
    """The per-IST-day token count in MongoDB; ``limit`` None = count only, never refuse."""

    def __init__(
        self, collection: Collection, limit: int | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.collection = collection
        self.limit = limit
        self.now = now
        self._ensured: set[str] = set()
        self._lock = threading.Lock()
        self._unsettled: dict[str, Counter[str]] = {}
        self._unsettled_calls = 0

    def _ensure(self, day: str) -> None:
        if day in self._ensured:
            return
        self._ensured.add(day)
        with suppress(DuplicateKeyError):  # two first calls of the day raced; the other one created it
            self.collection.update_one(
                {"_id": day},
                {"$setOnInsert": {"tokens": 0, "prompt_tokens": 0, "completion_tokens": 0, "calls": 0}},
                upsert=True,
            )

    def reserve(self, tokens: int) -> str:
        """Reserve ``tokens`` for one call; returns the day it counts on, or raises BudgetExhausted."""
        day = ist_day(self.now())
        self._ensure(day)
        if self.limit is None:
            return day
        reserved = self.collection.update_one(
            {"_id": day, "tokens": {"$lte": self.limit - tokens}}, {"$inc": {"tokens": tokens}}
        )
        if reserved.modified_count == 1:
            return day
        self.collection.update_one(
            {"_id": day, "exhausted_at": {"$exists": False}},
            {"$set": {"exhausted_at": self.now(), "limit": self.limit}},
        )
        raise BudgetExhausted

    def settle(self, day: str, reserved: int, usage: Usage | None) -> None:
        """Replace the reservation by what the call really used (nothing, if it failed).

        Without a limit nothing was reserved and nothing waits on the count, so the calls'
        usage is added up here and written every :data:`SETTLE_EVERY` calls and at
        :meth:`flush` (the end of a batch): one write per 50 messages instead of one each. With a
        limit every settle is written at once, as the next reservation depends on it."""
        used = usage.total_tokens if usage else 0
        inc: dict[str, int] = {"tokens": used - (reserved if self.limit is not None else 0)}
        if usage:
            inc |= {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "calls": 1}
        if self.limit is not None:
            self.collection.update_one({"_id": day}, {"$inc": inc})
            return
        with self._lock:
            self._unsettled.setdefault(day, Counter()).update(inc)
            self._unsettled_calls += 1
            if self._unsettled_calls < SETTLE_EVERY:
                return
        self.flush()

    def flush(self) -> None:
        """Write the usage added up since the last write (see :meth:`settle`)."""
        with self._lock:
            unsettled, self._unsettled, self._unsettled_calls = self._unsettled, {}, 0
        for day, inc in unsettled.items():
            # An upsert: the thread that first saw the day may not have created its document yet.
            try:
                self.collection.update_one({"_id": day}, {"$inc": dict(inc)}, upsert=True)
            except DuplicateKeyError:  # it did, just now
                self.collection.update_one({"_id": day}, {"$inc": dict(inc)})

    def today(self) -> dict[str, Any]:
        return self.collection.find_one({"_id": ist_day(self.now())}) or {}

    def record_insufficient_quota(self) -> None:
        day = ist_day(self.now())
        self._ensure(day)
        self.collection.update_one(
            {"_id": day, "insufficient_quota_at": {"$exists": False}}, {"$set": {"insufficient_quota_at": self.now()}}
        )

    def claim_quota_alert(self) -> dict[str, Any] | None:
        """The day's document if OpenAI said ``insufficient_quota`` and nobody alerted yet (then: we do)."""
        return self.collection.find_one_and_update(
            {
                "_id": ist_day(self.now()),
                "insufficient_quota_at": {"$exists": True},
                "insufficient_quota_alerted_at": {"$exists": False},
            },
            {"$set": {"insufficient_quota_alerted_at": self.now()}},
        )

    def claim_alert(self) -> dict[str, Any] | None:
        """The day's document if its budget ran out and nobody alerted yet (then: we do)."""
        return self.collection.find_one_and_update(
            {"_id": ist_day(self.now()), "exhausted_at": {"$exists": True}, "alerted_at": {"$exists": False}},
            {"$set": {"alerted_at": self.now()}},
        )


@dataclass
class _Totals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Call:
    """One metered call: :meth:`record` the reply inside the ``with`` block."""

    usage: Usage | None = None
    model: str = ""
    _response: Any = field(default=None, repr=False)

    def record(self, response: Any) -> None:
        self._response = response
        self.usage = usage_of(response, self.model)

    @property
    def usage_dict(self) -> dict[str, Any] | None:
        return self.usage.as_dict() if self.usage else None


class UsageMeter:
    """Per-run token totals and the daily budget; safe to share between threads."""

    def __init__(self, budget: DailyBudget | None, prices: dict[str, dict[str, float]] | None = None) -> None:
        self.budget = budget
        self.prices = prices if prices is not None else parse_prices(None)
        self._lock = threading.Lock()
        self._by_model: dict[str, _Totals] = {}
        self.fallback_budget = 0
        self.missing_usage = 0
        self.insufficient_quota = 0

    @contextmanager
    def call(self, messages: list[dict[str, Any]], max_tokens: int, model: str) -> Iterator[Call]:
        """Reserve budget for one call (raises :class:`BudgetExhausted`), meter its reply."""
        reserved = estimate_tokens(messages, max_tokens)
        try:
            day = self.budget.reserve(reserved) if self.budget else None
        except BudgetExhausted:
            with self._lock:
                self.fallback_budget += 1
            raise
        call = Call(model=model)
        try:
            yield call
        finally:
            self._add(call, model)
            if self.budget is not None and day is not None:
                self.budget.settle(day, reserved, call.usage)

    def flush(self) -> None:
        """Write the budget's unwritten usage (the end of a batch)."""
        if self.budget is not None:
            self.budget.flush()

    def record_insufficient_quota(self) -> None:
        with self._lock:
            self.insufficient_quota += 1
        if self.budget is not None:
            self.budget.record_insufficient_quota()

    def _add(self, call: Call, model: str) -> None:
        with self._lock:
            if call.usage is None:
                if call._response is not None:
                    self.missing_usage += 1
                return
            totals = self._by_model.setdefault(call.usage.model or model, _Totals())
            totals.calls += 1
            totals.prompt_tokens += call.usage.prompt_tokens
            totals.completion_tokens += call.usage.completion_tokens

    def summary(self) -> dict[str, Any]:
        with self._lock:
            by_model = {m: dict(vars(t)) for m, t in self._by_model.items()}
            fallback_budget, missing = self.fallback_budget, self.missing_usage
        cost, unpriced = 0.0, []
        for model, totals in by_model.items():
            price = _price_for(self.prices, model)
            if price is None:
                unpriced.append(model)
                continue
            model_cost = (
                totals["prompt_tokens"] * price["input"] + totals["completion_tokens"] * price["output"]
            ) / 1e6
            totals["estimated_cost_usd"] = round(model_cost, 6)
            cost += model_cost
        prompt = sum(t["prompt_tokens"] for t in by_model.values())
        completion = sum(t["completion_tokens"] for t in by_model.values())
        result: dict[str, Any] = {
            "calls": sum(t["calls"] for t in by_model.values()),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_cost_usd": None if unpriced else round(cost, 6),
            "by_model": by_model,
            "replies_without_usage": missing,
            "insufficient_quota": self.insufficient_quota,
        }
        if unpriced:
            result["unpriced_models"] = sorted(unpriced)
        if self.budget is not None:
            today = self.budget.today()
            result["daily_budget"] = {
                "limit": self.budget.limit,
                "day_ist": today.get("_id"),
                "tokens_today": today.get("tokens", 0),
                "exhausted": "exhausted_at" in today,
            }
        return {"openai_usage": result, "fallback_budget": fallback_budget}

    @classmethod
    def from_airflow(cls, db: Any) -> UsageMeter:
        """Budget and prices from their Variables (read once, in the task's main thread)."""
        from airflow.sdk import Variable

        limit = parse_budget(Variable.get(VAR_DAILY_TOKEN_BUDGET, default=None))
        prices = parse_prices(Variable.get(VAR_PRICES, default=None))
        return cls(DailyBudget(db[BUDGET_COLLECTION], limit), prices)


@contextmanager
def metered(meter: UsageMeter | None, messages: list[dict[str, Any]], max_tokens: int, model: str) -> Iterator[Call]:
    """:meth:`UsageMeter.call`, or a no-op when no meter is wired (unit tests, benchmarks)."""
    if meter is None:
        yield Call(model=model)
        return
    with meter.call(messages, max_tokens, model) as call:
        yield call


def _current_run_id() -> str:
    try:
        from airflow.sdk import get_current_context

        return str(get_current_context()["run_id"])
    except RuntimeError:  # outside a task (a script, a benchmark): the alert names no run
        return ""


def publish_budget_alert(meter: UsageMeter | None, dag_id: str, run_id: str | None = None) -> bool:
    """One alert per IST day when the budget ran out (whichever run claims it first)."""
    if meter is None or meter.budget is None or meter.budget.limit is None:
        return False
    doc = meter.budget.claim_alert()
    if doc is None:
        return False
    from leadflow.alerts import publish_alert
    from leadflow.timefmt import ist

    run_id = run_id if run_id is not None else _current_run_id()

    lines = {
        "dag": dag_id,
        "run": run_id,
        "day_ist": doc["_id"],
        "budget_tokens": meter.budget.limit,
        "tokens_used": doc.get("tokens"),
        "exhausted_at": ist(doc.get("exhausted_at")),
        "effect": "follow-ups use the template texts until the next IST day",
        "where": f"Variable {VAR_DAILY_TOKEN_BUDGET}; MongoDB {BUDGET_COLLECTION}",
    }
    publish_alert(f"[leadflow] {dag_id}: OpenAI daily token budget spent ({doc['_id']})", lines)
    return True


def publish_quota_alert(meter: UsageMeter | None, dag_id: str, run_id: str | None = None) -> bool:
    """One alert per IST day when OpenAI said ``insufficient_quota`` (whichever run claims it first)."""
    if meter is None or meter.budget is None:
        return False
    doc = meter.budget.claim_quota_alert()
    if doc is None:
        return False
    from leadflow.alerts import publish_alert
    from leadflow.timefmt import ist

    lines = {
        "dag": dag_id,
        "run": run_id if run_id is not None else _current_run_id(),
        "day_ist": doc["_id"],
        "first_seen_at": ist(doc.get("insufficient_quota_at")),
        "effect": "follow-ups are sent with the template texts until the OpenAI account has credit again",
        "fix": "add credit or raise the usage limit in the OpenAI organisation's billing settings",
    }
    publish_alert(f"[leadflow] {dag_id}: OpenAI account out of credit (insufficient_quota)", lines)
    return True
