"""The batch processor and the ledger against the stand-ins, wired by hand (no Airflow)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from openai import OpenAI

from devstack import clients
from leadflow.followups.ledger import Ledger, State
from leadflow.followups.personalise import Personaliser
from leadflow.followups.processor import FollowupProcessor
from leadflow.followups.settings import ProcessorSettings, TemplateConfig
from leadflow.followups.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
from tests.followups.support import TEMPLATES, VISIT_AT, Env, event

TOKEN = "local-whatsapp-token"


def make_processor(
    env: Env,
    *,
    pacing: float = 6.0,
    attempts: int = 3,
    templates: dict[str, str] = TEMPLATES,
    concurrency: int = 4,
    redelivery_delay: int = 0,
    pair_wait: float = 6.0,
) -> FollowupProcessor:
    openai = OpenAI(base_url=env.stack.openai_url, api_key="sk-test", max_retries=0, timeout=5)
    whatsapp = WhatsAppClient(
        WhatsAppConfig(env.stack.whatsapp_url, TOKEN, "100000000000001"),
        retry=RetryPolicy(attempts=attempts, initial_wait=0.05, max_wait=0.2, pair_wait=pair_wait),
    )
    settings = ProcessorSettings(
        queue_url=env.stack.queue_url,
        dlq_url=env.stack.dlq_url,
        templates=TemplateConfig.parse({"language": "en", "templates": templates}),
        concurrency=concurrency,
        send_rate_per_second=0,
        pacing_seconds=pacing,
        redelivery_delay_seconds=redelivery_delay,
    )
    return FollowupProcessor(
        db=env.db, sqs=env.sqs, personaliser=Personaliser(openai, "gpt-4o-mini"), whatsapp=whatsapp, settings=settings
    )


def receive_all(env: Env) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = env.sqs.receive_message(
            QueueUrl=env.stack.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not batch:
            return messages
        messages += batch


def test_two_messages_to_one_user_are_paced(env: Env) -> None:
    clients.set_settings(env.whatsapp, pair_rate_limit_seconds=1.0)  # the stand-in enforces it too
    uid, phone = env.add_user("Vihaan Joshi", wrote_ago=timedelta(hours=1))
    other, other_phone = env.add_user("Sai Chopra", wrote_ago=timedelta(hours=1))
    env.enqueue(event("inquiry_followup", uid))
    env.enqueue(event("cost_sheet_followup", uid))
    env.enqueue(event("inquiry_followup", other))

    summary = make_processor(env, pacing=1.0).process(receive_all(env))

    assert (summary.sent, summary.left_for_redelivery) == (3, 0)
    assert [c["status"] for c in env.send_calls()] == [200, 200, 200]  # no 131056
    times = sorted(datetime.fromisoformat(m["received_at"]) for m in env.outbox() if m["to"] == phone)
    assert times[1] - times[0] >= timedelta(seconds=1.0)
    assert other_phone in {m["to"] for m in env.outbox()}


def test_a_pair_rate_limit_error_is_retried_after_the_pair_interval(env: Env) -> None:
    clients.set_settings(env.whatsapp, pair_rate_limit_seconds=1.0)
    uid, phone = env.add_user("Aadhya Rao")
    env.enqueue(event("inquiry_followup", uid))
    env.enqueue(event("cost_sheet_followup", uid))

    # Pacing off, so the second message hits Meta's pair limit (131056) and must wait it out.
    summary = make_processor(env, pacing=0, pair_wait=1.0).process(receive_all(env))

    assert (summary.sent, summary.left_for_redelivery) == (2, 0)
    assert [c["status"] for c in env.send_calls()] == [200, 400, 200]
    times = sorted(datetime.fromisoformat(m["received_at"]) for m in env.outbox() if m["to"] == phone)
    assert times[1] - times[0] >= timedelta(seconds=1.0)


def test_a_transient_failure_that_outlasts_the_retries_is_left_for_redelivery(env: Env) -> None:
    uid, phone = env.add_user("Reyansh Das")
    body = event("inquiry_followup", uid, event_id="evt-flaky")
    env.enqueue(body)
    clients.inject_faults(env.whatsapp, [{"count": 3, "status": 503}])

    first = make_processor(env, attempts=3).process(receive_all(env))

    assert (first.sent, first.left_for_redelivery, first.dead_lettered) == (0, 1, 0)
    assert [c["status"] for c in env.send_calls()] == [503, 503, 503]
    doc = env.ledger()["evt-flaky"]
    assert (doc["state"], doc["last_error"], doc["attempts"]) == ("pending", "131000", 1)
    assert env.dlq() == []

    # SQS redelivers it (visible again at once here): sent once, with the stored text.
    second = make_processor(env).process(receive_all(env))

    assert second.sent == 1
    [message] = env.outbox()
    assert message["to"] == phone
    doc = env.ledger()["evt-flaky"]
    assert (doc["state"], doc["attempts"], doc["wamid"]) == ("sent", 2, message["wamid"])
    assert len(env.chat_calls()) == 1  # the text was generated once
    assert env.queue_counts() == (0, 0)


def test_rejected_credentials_stop_the_batch_and_keep_every_message(env: Env) -> None:
    clients.set_settings(env.whatsapp, access_token="a-different-token")
    for name in ("A One", "B Two", "C Three"):
        env.enqueue(event("inquiry_followup", env.add_user(name)[0]))

    summary = make_processor(env, concurrency=1).process(receive_all(env))

    assert summary.fatal_error == "WhatsApp rejected the credentials (code 190)"
    assert (summary.left_for_redelivery, summary.sent, summary.dead_lettered) == (3, 0, 0)
    assert [c["status"] for c in env.send_calls()] == [401]
    assert env.queue_counts() == (3, 0)
    assert {doc["state"] for doc in env.ledger().values()} == {"pending"}


def test_exhausted_openai_quota_is_a_permanent_failure(env: Env) -> None:
    uid, _ = env.add_user("Myra Gupta")
    env.enqueue(event("inquiry_followup", uid, event_id="evt-quota"))
    clients.inject_faults(env.openai, [{"count": 1, "status": 429, "error_code": "insufficient_quota"}])

    summary = make_processor(env).process(receive_all(env))

    assert (summary.failed, summary.dead_lettered, summary.fallbacks) == (1, 1, 0)
    assert dict(summary.failure_codes) == {"insufficient_quota": 1}
    doc = env.ledger()["evt-quota"]
    assert (doc["state"], doc["error_code"]) == ("failed", "insufficient_quota")
    [dead] = env.dlq()
    assert dead["reason_code"] == "openai_insufficient_quota"
    assert env.outbox() == []


def test_a_closed_window_without_a_template_fails_instead_of_sending_free_text(env: Env) -> None:
    uid, _ = env.add_user("Pari Verma")  # never wrote to us
    env.enqueue(event("cost_sheet_followup", uid, event_id="evt-no-template"))
    templates = {k: v for k, v in TEMPLATES.items() if k != "cost_sheet_followup"}

    summary = make_processor(env, templates=templates).process(receive_all(env))

    assert (summary.failed, summary.sent) == (1, 0)
    assert env.ledger()["evt-no-template"]["error_code"] == "no_template"
    assert env.outbox() == []
    assert [d["reason_code"] for d in env.dlq()] == ["no_template"]


def test_an_outcome_whose_dlq_copy_was_never_confirmed_is_dead_lettered_again(env: Env) -> None:
    body = event("inquiry_followup", "5f0000000000000000000001", event_id="evt-lost")
    env.db.followup_deliveries.insert_one(
        {"_id": "evt-lost", "state": "dead_lettered", "reason": "unknown_user: no such user"}
    )
    env.enqueue(body)

    summary = make_processor(env).process(receive_all(env))

    assert (summary.dead_lettered, summary.duplicates) == (1, 0)
    [dead] = env.dlq()
    assert (dead["event_id"], dead["reason_code"]) == ("evt-lost", "unknown_user")
    assert env.ledger()["evt-lost"]["dlq_message_id"]
    assert env.queue_counts() == (0, 0)


def test_logs_never_carry_the_number_the_token_or_the_key(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    uid, phone = env.add_user("Harleen Kaur", wrote_ago=timedelta(hours=1))
    bad, _ = env.add_user("Deepa Shah", mobile="98765")
    env.enqueue(event("site_visit_reminder", uid, scheduled_at=VISIT_AT))
    env.enqueue(event("inquiry_followup", bad))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 429, "error_code": 130429}])

    with caplog.at_level(logging.DEBUG):
        summary = make_processor(env).process(receive_all(env))

    assert (summary.sent, summary.dead_lettered) == (1, 1)
    text = caplog.text
    assert f"***{phone[-4:]}" in text  # masked numbers are logged...
    assert phone[-10:] not in text  # ...full ones never
    assert TOKEN not in text
    assert "sk-test" not in text


# -- the ledger's state machine ----------------------------------------------------------------


def test_the_ledger_allows_one_sender_and_never_downgrades_a_send(env: Env) -> None:
    ledger = Ledger(env.db.followup_deliveries)
    first = ledger.claim("e", event_type="x", user_id="u", text="one", text_source="openai",
                         fallback_reason=None, sqs_message_id="m1")  # fmt: skip
    again = ledger.claim("e", event_type="x", user_id="u", text="two", text_source="openai",
                         fallback_reason=None, sqs_message_id="m2")  # fmt: skip
    assert first["text"] == again["text"] == "one"
    assert again["sqs_message_ids"] == ["m1", "m2"]

    assert ledger.mark_sending("e") is True
    assert ledger.mark_sending("e") is False  # only one worker may send
    assert ledger.finish("e", State.SKIPPED, sqs_message_id="m3")[0] is False  # not while sending
    assert ledger.mark_sent("e", wamid="wamid.1", send_mode="text") is True
    assert ledger.release("e", error_code="x") is False
    assert ledger.fail_send("e", error_code="x", reason="x") is False
    recorded, doc = ledger.finish("e", State.DEAD_LETTERED, sqs_message_id="m4", reason="late")
    assert recorded is False
    assert doc is not None
    assert (doc["state"], doc["wamid"], doc["attempts"]) == ("sent", "wamid.1", 1)
    assert ledger.last_sent_at("u") == doc["sent_at"]
