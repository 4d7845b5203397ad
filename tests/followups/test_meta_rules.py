"""Meta's rules at send time, against the WhatsApp stand-in (no Airflow): paused/disabled
templates, the 24-hour window closing under us (sync 131047), the per-user marketing limit
(131049) and the marketing opt-out (131050), and the send-rate limit over retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from devstack import clients
from leadflow.followups.personalise import Personaliser
from leadflow.followups.processor import FollowupProcessor
from leadflow.followups.settings import ProcessorSettings
from leadflow.marketing import MARKETING_PAUSE, OPT_OUT, PAUSED_UNTIL, marketing_hold, record_refusal
from leadflow.messaging.templates import TemplateConfig
from leadflow.messaging.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
from tests.followups.support import TEMPLATES, VISIT_AT, Env, event, template_params

TOKEN = "local-whatsapp-token"


def processor(env: Env, *, send_rate: float = 0, attempts: int = 3, concurrency: int = 1) -> FollowupProcessor:
    openai = OpenAI(base_url=env.stack.openai_url, api_key="sk-test", max_retries=0, timeout=5)
    whatsapp = WhatsAppClient(
        WhatsAppConfig(env.stack.whatsapp_url, TOKEN, "100000000000001"),
        retry=RetryPolicy(attempts=attempts, initial_wait=0.05, max_wait=0.1),
    )
    settings = ProcessorSettings(
        queue_url=env.stack.queue_url,
        dlq_url=env.stack.dlq_url,
        templates=TemplateConfig.parse({"language": "en", "templates": TEMPLATES}),
        concurrency=concurrency,
        send_rate_per_second=send_rate,
        pacing_seconds=0,
        redelivery_delay_seconds=0,
    )
    return FollowupProcessor(
        db=env.db, sqs=env.sqs, personaliser=Personaliser(openai, "gpt-4o-mini"), whatsapp=whatsapp, settings=settings
    )


def run_batch(env: Env, **kwargs: Any) -> Any:
    messages: list[dict[str, Any]] = []
    while batch := env.sqs.receive_message(
        QueueUrl=env.stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60
    ).get("Messages", []):
        messages += batch
    return processor(env, **kwargs).process(messages)


def enqueue(env: Env, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    for body in bodies:
        env.enqueue(body)
    return list(bodies)


def user_doc(env: Env, uid: str) -> dict[str, Any]:
    return env.db.users.find_one({"_id": ObjectId(uid)})


# -- 132015 / 132016: a paused or disabled template stops the batch like 132001 -------------------


@pytest.mark.parametrize("code", [132015, 132016])
def test_a_paused_or_disabled_template_stops_the_batch_instead_of_failing_each_message(env: Env, code: int) -> None:
    clients.set_settings(env.whatsapp, paused_templates={"inquiry_followup_v1": code})
    enqueue(env, *(event("inquiry_followup", env.add_user(name)[0]) for name in ("A One", "B Two", "C Three")))

    summary = run_batch(env)

    assert summary.account_error_code == str(code)
    assert (summary.sent, summary.failed, summary.dead_lettered, summary.left_for_redelivery) == (0, 0, 0, 3)
    assert [c["status"] for c in env.send_calls()] == [400]  # no message after the first answer
    assert {doc["state"] for doc in env.ledger().values()} == {"pending"}
    assert env.dlq() == []


# -- 131047 synchronously: the template, as when it arrives in a receipt ---------------------------


def test_a_synchronous_131047_sends_the_template_with_the_same_text(env: Env) -> None:
    uid, phone = env.add_user("Kiara Iyer", wrote_ago=timedelta(hours=2))  # MongoDB says: window open
    [body] = enqueue(env, event("cost_sheet_followup", uid))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 400, "error_code": 131047}])

    summary = run_batch(env)

    assert (summary.sent, summary.failed, summary.dead_lettered) == (1, 0, 0)
    assert [c["status"] for c in env.send_calls()] == [400, 200]
    [sent] = env.outbox()
    doc = env.ledger()[body["event_id"]]
    assert (sent["type"], sent["to"], sent["biz_opaque_callback_data"]) == ("template", phone, body["event_id"])
    assert template_params(sent) == [doc["text"]]
    assert (doc["state"], doc["send_mode"], doc["wamid"]) == ("sent", "template", sent["wamid"])
    assert env.dlq() == []


def test_a_synchronous_131047_on_a_template_is_a_permanent_failure_not_a_loop(env: Env) -> None:
    uid, _ = env.add_user("Old Lead")  # never wrote: already a template
    [body] = enqueue(env, event("cost_sheet_followup", uid))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 400, "error_code": 131047}])

    summary = run_batch(env)

    assert (summary.sent, summary.failed) == (0, 1)
    assert len(env.send_calls()) == 1
    assert env.ledger()[body["event_id"]]["state"] == "failed"


# -- 131049 / 131050: stored on the buyer, respected at send time; reminders unaffected -------------


@pytest.mark.parametrize(("code", "hold"), [(131049, "marketing_limit"), (131050, "marketing_opted_out")])
def test_a_marketing_refusal_holds_the_buyers_marketing_but_not_their_reminders(env: Env, code: int, hold: str) -> None:
    uid, _ = env.add_user("Rhea Menon")
    [nudge] = enqueue(env, event("inquiry_followup", uid))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 400, "error_code": code}])
    before = datetime.now(UTC)

    first = run_batch(env)

    doc = env.ledger()[nudge["event_id"]]
    assert (doc["state"], doc["reason"], doc["error_code"]) == ("skipped", hold, str(code))
    assert (first.sent, first.failed, first.dead_lettered, dict(first.skip_reasons)) == (0, 0, 0, {hold: 1})
    assert env.dlq() == []  # nothing to redrive: retrying cannot help
    user = user_doc(env, uid)
    if code == 131049:
        assert before + MARKETING_PAUSE <= user[PAUSED_UNTIL].replace(tzinfo=UTC) <= datetime.now(UTC) + MARKETING_PAUSE
        assert OPT_OUT not in user
    else:
        assert user[OPT_OUT] is True
        assert PAUSED_UNTIL not in user

    # The next nudge to that buyer is not even tried; their site-visit reminder (UTILITY) goes.
    [later, reminder] = enqueue(
        env, event("cost_sheet_followup", uid), event("site_visit_reminder", uid, scheduled_at=VISIT_AT)
    )
    second = run_batch(env)

    ledger = env.ledger()
    assert (ledger[later["event_id"]]["state"], ledger[later["event_id"]]["reason"]) == ("skipped", hold)
    assert ledger[reminder["event_id"]]["state"] == "sent"
    assert (second.sent, dict(second.skip_reasons)) == (1, {hold: 1})
    assert [c["status"] for c in env.send_calls()] == [400, 200]


def test_the_24_hour_marketing_limit_ends(env: Env) -> None:
    uid, _ = env.add_user("Past Limit")
    env.db.users.update_one({"_id": ObjectId(uid)}, {"$set": {PAUSED_UNTIL: datetime.now(UTC) - timedelta(minutes=1)}})
    [nudge] = enqueue(env, event("inquiry_followup", uid))

    run_batch(env)

    assert env.ledger()[nudge["event_id"]]["state"] == "sent"


# -- the global send rate covers every attempt, retries after 130429 too ---------------------------


def test_retries_after_130429_wait_for_the_send_rate_limiter(env: Env) -> None:
    rate = 4.0  # messages per second: one token every 0.25 s
    enqueue(env, event("inquiry_followup", env.add_user("Rate Limited")[0]))
    clients.inject_faults(env.whatsapp, [{"count": 2, "status": 429, "error_code": 130429}])

    summary = run_batch(env, send_rate=rate, attempts=4)

    assert summary.sent == 1
    calls = env.send_calls()
    assert [c["status"] for c in calls] == [429, 429, 200]
    gaps = [later["at"] - earlier["at"] for earlier, later in pairwise(calls)]
    # The client's own backoff is 0.05-0.1 s; only the limiter spaces attempts 0.25 s apart.
    assert min(gaps) >= 1 / rate - 0.02, gaps


# -- template categories per event type ----------------------------------------------------------


def test_reminders_are_utility_and_nudges_marketing_unless_configured() -> None:
    config = TemplateConfig.parse(
        {
            "language": "en",
            "templates": {
                "site_visit_reminder": "site_visit_reminder_v1",
                "cost_sheet_followup": {"name": "cost_sheet_followup_v1"},
                "inquiry_followup": {"name": "inquiry_followup_v1", "category": "utility"},
            },
        }
    )

    assert config.category("site_visit_reminder") == "UTILITY"
    assert config.category("cost_sheet_followup") == "MARKETING"
    assert config.category("inquiry_followup") == "UTILITY"
    with pytest.raises(ValueError, match="category"):
        TemplateConfig.parse({"templates": {"inquiry_followup": {"name": "x", "category": "PROMO"}}})


def test_the_configured_categories_are_the_ones_the_templates_are_approved_in() -> None:
    from devstack.airflow_settings import read_settings
    from devstack.whatsapp_templates import load_templates
    from leadflow.config import VAR_WHATSAPP_TEMPLATES

    configured = TemplateConfig.parse(read_settings().variables[VAR_WHATSAPP_TEMPLATES]).templates
    approved = {t["name"]: t["category"] for t in load_templates() if isinstance(t, dict)}

    assert {event_type: t.category for event_type, t in configured.items()} == {
        event_type: approved[t.name] for event_type, t in configured.items()
    }
    assert configured["site_visit_reminder"].category == "UTILITY"


# -- the promise: after any interleaving of Meta's answers, the hold is what they imply ----------

BASE = datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
answers = st.lists(
    st.tuples(st.sampled_from([131049, 131050, 131026, 131047, "131049"]), st.integers(0, 72 * 60)), max_size=8
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=answers, probes=st.lists(st.integers(-60, 100 * 60), min_size=1, max_size=6))
def test_marketing_holds_follow_metas_answers_in_any_order(env: Env, answers: list, probes: list[int]) -> None:
    """Meta's answers about one buyer arrive in any order (sync, or receipts at least once and out
    of order); whatever the order, the buyer's hold at any time is what the answers imply: opted
    out after any 131050, otherwise paused until 24 h after the latest 131049."""
    env.db.users.delete_many({"name": "Hypothesis Buyer"})
    uid = env.db.users.insert_one({"name": "Hypothesis Buyer"}).inserted_id
    for code, minutes in answers:
        record_refusal(env.db.users, str(uid), code, BASE + timedelta(minutes=minutes))
    user = env.db.users.find_one({"_id": uid})

    opted_out = any(str(code) == "131050" for code, _ in answers)
    limit_ends = [m + 24 * 60 for code, m in answers if str(code) == "131049"]
    for probe in probes:
        expected = "marketing_opted_out" if opted_out else None
        if expected is None and limit_ends and max(limit_ends) > probe:
            expected = "marketing_limit"
        assert marketing_hold(user, BASE + timedelta(minutes=probe)) == expected, (answers, probe)
