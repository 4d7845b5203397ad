"""OpenAI usage, cost and the daily token budget, through ``whatsapp_followups`` runs and MongoDB."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from devstack import clients
from leadflow.followups.openai_usage import BUDGET_COLLECTION, BudgetExhausted, DailyBudget, ist_day
from tests.helpers import load_dag, xcom_value

BUDGET_VAR = "leadflow_openai_daily_token_budget"
CONCURRENCY_VAR = "leadflow_followup_concurrency"


@pytest.fixture
def followups(airflow_settings):
    from airflow.models import Variable

    dag = load_dag("whatsapp_followups")
    yield dag
    Variable.delete(BUDGET_VAR)
    Variable.set(CONCURRENCY_VAR, "64")


def _queue_nudges(penv, count: int, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        user = penv.add_user(f"Buyer {tag}{n}")
        penv.message(user, datetime.now(UTC) - timedelta(hours=1))  # window open: free-form text
        event_id = f"evt-budget-{tag}-{n}"
        body = {"event_id": event_id, "event_type": "inquiry_followup", "user_id": user}
        penv.sqs.send_message(QueueUrl=penv.stack.queue_url, MessageBody=json.dumps(body))
        ids.append(event_id)
    return ids


def _run(dag) -> dict:
    run = dag.test(run_conf={"max_wait_seconds": 3})
    assert run.state == "success"
    return xcom_value(run, "process_messages")


def test_usage_is_summed_stored_on_the_ledger_and_priced(followups, penv) -> None:
    ids = _queue_nudges(penv, 3, "u")

    summary = _run(followups)

    usage = summary["openai_usage"]
    ledger = {d["_id"]: d for d in penv.db.followup_deliveries.find()}
    assert {ledger[i]["text_source"] for i in ids} == {"openai"}
    stored = [ledger[i]["openai_usage"] for i in ids]
    # The stand-in's usage figures, as OpenAI sends them, summed per run and per model.
    assert usage["calls"] == 3
    assert usage["prompt_tokens"] == sum(s["prompt_tokens"] for s in stored) > 3 * 150
    assert usage["completion_tokens"] == sum(s["completion_tokens"] for s in stored) > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # gpt-4o-mini list price: $0.15 in / $0.60 out per 1M tokens.
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
    assert usage["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert usage["by_model"]["gpt-4o-mini"]["calls"] == 3
    assert summary["fallback_budget"] == 0
    assert usage["daily_budget"]["limit"] is None  # unset = unlimited, still counted per day
    assert usage["daily_budget"]["tokens_today"] == usage["total_tokens"]


def test_budget_spent_switches_to_templates_alerts_once_and_the_next_day_uses_openai(followups, penv) -> None:
    from airflow.models import Variable

    # One call reserves ~410 tokens (prompt estimate + max_tokens 200) and uses ~250: 500 lets
    # exactly the first call through. One thread, so "first" is well defined.
    Variable.set(BUDGET_VAR, "500")
    Variable.set(CONCURRENCY_VAR, "1")
    first_ids = _queue_nudges(penv, 4, "a")

    first = _run(followups)

    assert first["openai_usage"]["calls"] == 1
    assert first["fallback_budget"] == 3
    ledger = {d["_id"]: d for d in penv.db.followup_deliveries.find()}
    sources = [(ledger[i]["text_source"], ledger[i]["fallback_reason"]) for i in first_ids]
    assert sources.count(("openai", None)) == 1
    assert sources.count(("fallback", "budget_exhausted")) == 3
    assert first["sent"] == 4  # template texts still go out
    calls_after_first = len([c for c in clients.calls(penv.stack.control_url("openai")) if "chat" in c["path"]])
    assert calls_after_first == 1
    day = penv.db[BUDGET_COLLECTION].find_one({"_id": ist_day(datetime.now(UTC))})
    assert day["tokens"] == first["openai_usage"]["total_tokens"] <= 500
    assert "exhausted_at" in day

    # Same day: still spent, no further OpenAI call, and no second alert.
    _queue_nudges(penv, 2, "b")
    second = _run(followups)
    assert second["fallback_budget"] == 2
    assert second["openai_usage"]["calls"] == 0
    alerts = [a for a in penv.alerts.read() if "budget" in (a.get("_subject") or "")]
    assert len(alerts) == 1
    assert alerts[0]["budget_tokens"] == 500
    assert alerts[0]["dag"] == "whatsapp_followups"
    assert alerts[0]["exhausted_at"].endswith(" +05:30")  # IST, like every time in an alert

    # The next IST day: what the previous day left behind is yesterday's document.
    today = ist_day(datetime.now(UTC))
    doc = penv.db[BUDGET_COLLECTION].find_one_and_delete({"_id": today})
    yesterday = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
    penv.db[BUDGET_COLLECTION].insert_one({**doc, "_id": yesterday})
    third_ids = _queue_nudges(penv, 1, "c")
    third = _run(followups)
    assert third["openai_usage"]["calls"] == 1
    assert third["fallback_budget"] == 0
    assert penv.db.followup_deliveries.find_one({"_id": third_ids[0]})["text_source"] == "openai"
    assert [a for a in penv.alerts.read() if "budget" in (a.get("_subject") or "")] == []


def test_concurrent_reservations_never_overshoot_and_a_new_day_starts_fresh(penv) -> None:
    collection = penv.db[BUDGET_COLLECTION]
    today = datetime(2026, 11, 20, 18, 29, 59, tzinfo=UTC)  # 23:59:59 IST
    budget = DailyBudget(collection, limit=1000, now=lambda: today)
    granted, refused = [], []

    def worker() -> None:
        try:
            granted.append(budget.reserve(100))
        except BudgetExhausted:
            refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(granted) == 10
    assert len(refused) == 15
    assert collection.find_one({"_id": "2026-11-20"})["tokens"] == 1000
    # One second later it is 00:00 IST: a new budget day.
    tomorrow = DailyBudget(collection, limit=1000, now=lambda: today + timedelta(seconds=1))
    assert tomorrow.reserve(100) == "2026-11-21"
    assert tomorrow.claim_alert() is None  # nothing ran out on the new day
    assert budget.claim_alert()["_id"] == "2026-11-20"
    assert budget.claim_alert() is None  # exactly one claim per day
