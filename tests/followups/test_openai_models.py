"""OpenAI model families, ``finish_reason``, the fallback-rate alert and ``insufficient_quota``.

The OpenAI stand-in is as strict as OpenAI about the reasoning models (o-series, gpt-5): it
rejects ``max_tokens`` and a ``temperature`` with OpenAI's error bodies and spends reasoning
tokens out of ``max_completion_tokens``. Each family must take the primary path (the model's
text, no fallback) when the inputs are good.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack import clients
from leadflow.followups.contract import EventType
from leadflow.followups.openai_usage import BUDGET_COLLECTION
from leadflow.followups.personalise import Personaliser, fallback_text, is_reasoning_model, prompt_data
from leadflow.followups.tasks import fallback_alert_rate, too_many_fallbacks
from tests.followups.support import VISIT_AT, VISIT_TEXT, Env, event, run_dag

MODEL_VAR = "leadflow_openai_model"
CHAT = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
REASONING = ["o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"]
BUYER = {"name": "Asha Rao", "preferred_configuration": "2BHK", "inquiry_type": "cost_sheet"}


def client(env: Env) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.stack.openai_url, api_key="sk-test", max_retries=0, timeout=5)


def cost_sheet_data() -> Any:
    return prompt_data(EventType.COST_SHEET_FOLLOWUP, BUYER, None)


def ask(env: Env, model: str, **parameters: Any) -> Any:
    messages = [{"role": "user", "content": 'Follow up.\n<<<DATA\n{"name": "Asha"}\nDATA>>>'}]
    return client(env).chat.completions.create(model=model, messages=messages, **parameters)


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [*((m, False) for m in [*CHAT, "gpt-5-chat-latest", "gpt-4o-mini-2024-07-18"]),
     *((m, True) for m in [*REASONING, "o1", "o3", "gpt-5-nano", "gpt-5-2025-08-07"])],
)  # fmt: skip
def test_model_families(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


# -- the stand-in is as strict as OpenAI ------------------------------------------------------------


@pytest.mark.parametrize("model", REASONING)
def test_reasoning_models_reject_max_tokens_and_temperature_with_openais_errors(env: Env, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as max_tokens:
        ask(env, model, max_tokens=200)
    with pytest.raises(openai.BadRequestError) as temperature:
        ask(env, model, max_completion_tokens=2000, temperature=0.4)

    assert (max_tokens.value.code, max_tokens.value.param) == ("unsupported_parameter", "max_tokens")
    assert "Use 'max_completion_tokens' instead." in max_tokens.value.message
    assert (temperature.value.code, temperature.value.param) == ("unsupported_value", "temperature")
    assert "Only the default (1) value is supported." in temperature.value.message
    assert ask(env, model, max_completion_tokens=2000, temperature=1).choices[0].finish_reason == "stop"


def test_a_chat_model_rejects_reasoning_effort(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(env, "gpt-4o-mini", reasoning_effort="low")

    assert (excinfo.value.code, excinfo.value.param) == ("unsupported_parameter", "reasoning_effort")


def test_a_reasoning_model_can_spend_its_whole_limit_reasoning(env: Env) -> None:
    reply = ask(env, "o4-mini", max_completion_tokens=200)  # default effort: medium, ~384 reasoning tokens

    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == ""
    assert reply.usage.completion_tokens_details.reasoning_tokens == 200


# -- our requests: the right parameters per family, and the primary path --------------------------


@pytest.mark.parametrize("model", CHAT + REASONING)
def test_every_family_gets_parameters_it_accepts_and_the_models_text(env: Env, model: str) -> None:
    result = Personaliser(client(env), model).personalise(cost_sheet_data())

    assert (result.source, result.fallback_reason) == ("openai", None)
    assert result.text.startswith("Hi Asha Rao, your cost sheet for the 2BHK homes is ready.")
    [body] = clients.request_bodies(env.openai)
    assert "max_tokens" not in body
    if model in REASONING:
        assert "temperature" not in body
        assert body["reasoning_effort"] == "low"
        assert body["max_completion_tokens"] >= 2000  # room for the hidden reasoning
    else:
        assert (body["max_completion_tokens"], body["temperature"]) == (200, 0.4)
        assert "reasoning_effort" not in body


def test_a_reply_cut_off_at_its_length_limit_is_never_sent(env: Env) -> None:
    data = cost_sheet_data()

    result = Personaliser(client(env), "gpt-4o-mini", max_tokens=5).personalise(data)

    # The stand-in answered "Hi Asha Rao, your cost" with finish_reason "length": a harmless-looking
    # fragment that passes the content checks, and still not a message.
    assert (result.source, result.fallback_reason) == ("fallback", "openai_finish_length")
    assert result.text == fallback_text(data)


def test_a_filtered_reply_falls_back_with_its_reason(env: Env) -> None:
    clients.set_settings(env.openai, finish_reason="content_filter")

    result = Personaliser(client(env), "gpt-5-mini").personalise(cost_sheet_data())

    assert (result.source, result.fallback_reason) == ("fallback", "openai_finish_content_filter")


# -- the fallback-rate alert ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 100))
def test_the_fallback_alert_fires_exactly_when_the_rate_passes_the_threshold(
    generated: int, fallbacks: int, percent: int
) -> None:
    fallbacks = min(fallbacks, generated)
    # Integer arithmetic, independent of the code's float division.
    expected = fallbacks > 0 and fallbacks * 100 > percent * generated

    assert too_many_fallbacks({"texts_generated": generated, "fallbacks": fallbacks}, percent / 100) is expected


@pytest.mark.parametrize(("raw", "rate"), [(None, 0.2), ("0.2", 0.2), ("35", 0.35), ("35%", 0.35), ("x", 0.2)])
def test_the_threshold_variable(raw: Any, rate: float) -> None:
    assert fallback_alert_rate(raw) == pytest.approx(rate)


# -- through the DAG ----------------------------------------------------------------------------


@pytest.fixture
def model_variable(airflow_settings: Any) -> Any:
    from airflow.models import Variable

    def use(model: str) -> None:
        Variable.set(MODEL_VAR, model)

    yield use
    Variable.set(MODEL_VAR, "gpt-4o-mini")


def test_switching_to_a_reasoning_model_keeps_the_primary_path_and_stays_quiet(
    followups_dag: Any, env: Env, model_variable: Any
) -> None:
    model_variable("gpt-5-mini")
    users = [env.add_user(name) for name in ("Diya Kulkarni", "Ishaan Bose")]
    for uid, _ in users:
        env.enqueue(event("site_visit_reminder", uid, scheduled_at=VISIT_AT))

    run_dag(followups_dag)

    ledger = env.ledger()
    assert {doc["text_source"] for doc in ledger.values()} == {"openai"}
    assert all(VISIT_TEXT in doc["text"] for doc in ledger.values())
    assert {doc["state"] for doc in ledger.values()} == {"sent"}
    assert {b["model"] for b in clients.request_bodies(env.openai)} == {"gpt-5-mini"}
    assert env.alerts.read() == []


def test_insufficient_quota_sends_the_template_text_and_alerts_once_a_day(followups_dag: Any, env: Env) -> None:
    quota = {"status": 429, "error_code": "insufficient_quota"}
    bodies = [event("site_visit_reminder", env.add_user(name)[0], scheduled_at=VISIT_AT) for name in ("A Rao", "B Das")]
    for body in bodies:
        env.enqueue(body)
    clients.inject_faults(env.openai, [{**quota, "count": 10}])

    run_dag(followups_dag)
    first = env.alerts.read()
    later = event("site_visit_reminder", env.add_user("C Sen")[0], scheduled_at=VISIT_AT)
    env.enqueue(later)
    run_dag(followups_dag)
    second = env.alerts.read()

    ledger = env.ledger()
    for body in [*bodies, later]:
        doc = ledger[body["event_id"]]
        assert (doc["state"], doc["fallback_reason"]) == ("sent", "openai_insufficient_quota")
    assert len(env.outbox()) == 3
    assert env.dlq() == []
    subjects = sorted(a["_subject"] for a in first)
    assert subjects == [
        "[leadflow] whatsapp_followups: OpenAI account out of credit (insufficient_quota)",
        "[leadflow] whatsapp_followups: fallback rate 2/2 over 20%",
    ]
    # The same IST day: the fallback rate alerts per run, the quota once.
    assert [a["_subject"] for a in second] == ["[leadflow] whatsapp_followups: fallback rate 1/1 over 20%"]
    [day] = env.db[BUDGET_COLLECTION].find()
    assert day["insufficient_quota_at"] <= day["insufficient_quota_alerted_at"]
    assert json.dumps(second[0]["fallback_reasons"]) == '{"openai_insufficient_quota": 1}'
