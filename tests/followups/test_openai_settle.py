"""The daily OpenAI counter when no budget is set: usage written in batches, none of it lost."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.followups.openai_usage import SETTLE_EVERY, DailyBudget, Usage, ist_day

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
# A call's usage (prompt, completion tokens), or None: the call failed and used nothing.
call = st.one_of(st.none(), st.tuples(st.integers(0, 900), st.integers(0, 300)))
calls = st.integers(0, 3 * SETTLE_EVERY).flatmap(lambda n: st.lists(call, min_size=n, max_size=n))


@pytest.fixture(scope="module")
def database(stack: Any) -> Iterator[Any]:
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        yield client.leadflow


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(usages=calls, threads=st.integers(1, 6))
def test_without_a_limit_every_call_is_counted_once_after_the_flush_and_at_most_a_batch_waits(
    database: Any, usages: list[tuple[int, int] | None], threads: int
) -> None:
    collection = database[f"openai_settle_{uuid.uuid4().hex[:8]}"]
    budget = DailyBudget(collection, limit=None, now=lambda: NOW)
    day = ist_day(NOW)
    shares = [usages[n::threads] for n in range(threads)]

    def settle(share: list[tuple[int, int] | None]) -> None:
        for usage in share:
            reserved = budget.reserve(500)
            budget.settle(reserved, 500, Usage("gpt-4o-mini", *usage) if usage else None)

    workers = [threading.Thread(target=settle, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    answered = [u for u in usages if u is not None]
    # Before the flush: fewer than one batch of calls waits to be written.
    written = (collection.find_one({"_id": day}) or {}).get("calls", 0)
    assert 0 <= len(answered) - written < SETTLE_EVERY
    budget.flush()
    final = collection.find_one({"_id": day}) or {}  # no call at all: no day document
    assert final.get("calls", 0) == len(answered)
    assert final.get("prompt_tokens", 0) == sum(p for p, _ in answered)
    assert final.get("completion_tokens", 0) == sum(c for _, c in answered)
    assert final.get("tokens", 0) == sum(p + c for p, c in answered)
    collection.drop()
