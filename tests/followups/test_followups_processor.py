"""The batch processor and the ledger against the stand-ins, wired by hand (no Airflow)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from openai import OpenAI

from devstack import clients
from leadflow.followups.personalise import Personaliser
from leadflow.followups.processor import FollowupProcessor
from leadflow.followups.settings import ProcessorSettings
from leadflow.messaging.ledger import Ledger, NewText, State
from leadflow.messaging.queue_actions import receive_count
from leadflow.messaging.templates import TemplateConfig
from leadflow.messaging.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
from tests.followups.support import TEMPLATES, VISIT_AT, VISIT_TEXT, Env, event, template_params

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
    grace_seconds: float = 900,
    whatsapp_timeout: float = 15.0,
) -> FollowupProcessor:
    openai = OpenAI(base_url=env.stack.openai_url, api_key="sk-test", max_retries=0, timeout=5)
    whatsapp = WhatsAppClient(
        WhatsAppConfig(env.stack.whatsapp_url, TOKEN, "100000000000001", timeout=whatsapp_timeout),
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
        unknown_outcome_grace_seconds=grace_seconds,
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


def test_one_users_paced_messages_hold_one_thread_not_every_thread(env: Env) -> None:
    # Two threads, three messages for one user first in the queue, then two other users. If the
    # user's messages were spread over the threads, both would wait on that user's pacing and the
    # others would go out last; the visibility-timeout budget counts one pacing wait per thread.
    clients.set_settings(env.whatsapp, pair_rate_limit_seconds=0.5)
    busy, busy_phone = env.add_user("Kabir Nair", wrote_ago=timedelta(hours=1))
    for event_type in ("inquiry_followup", "cost_sheet_followup", "inquiry_followup"):
        env.enqueue(event(event_type, busy))
    others = [env.add_user(name, wrote_ago=timedelta(hours=1)) for name in ("Myra Iyer", "Ishaan Bose")]
    for uid, _ in others:
        env.enqueue(event("inquiry_followup", uid))

    summary = make_processor(env, pacing=0.5, concurrency=2).process(receive_all(env))

    assert (summary.sent, summary.left_for_redelivery) == (5, 0)
    sent = sorted(env.outbox(), key=lambda m: datetime.fromisoformat(m["received_at"]))
    order = [m["to"] for m in sent]
    second_to_busy = [i for i, to in enumerate(order) if to == busy_phone][1]
    assert {phone for _, phone in others} <= set(order[:second_to_busy]), order


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


def test_a_rejection_with_a_meta_error_body_is_left_for_redelivery_not_retried_at_once(env: Env) -> None:
    uid, phone = env.add_user("Reyansh Das")
    body = event("inquiry_followup", uid, event_id="evt-flaky")
    env.enqueue(body)
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 503}])  # Meta's body: code 131000

    first = make_processor(env, attempts=3).process(receive_all(env))

    assert (first.sent, first.left_for_redelivery, first.dead_lettered, first.unknown_outcome) == (0, 1, 0, 0)
    assert [c["status"] for c in env.send_calls()] == [503]  # only 429/130429/131056 are retried at once
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


@pytest.mark.parametrize("code", [190, 131042, 132001, 368])
def test_an_account_level_error_stops_the_batch_and_keeps_every_message(env: Env, code: int) -> None:
    status = {190: 401, 132001: 404}.get(code, 400)
    for name in ("A One", "B Two", "C Three"):
        env.enqueue(event("inquiry_followup", env.add_user(name)[0]))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": status, "error_code": code}])

    summary = make_processor(env, concurrency=1).process(receive_all(env))

    assert summary.account_error_code == str(code)
    assert (summary.left_for_redelivery, summary.sent, summary.dead_lettered, summary.failed) == (3, 0, 0, 0)
    assert [c["status"] for c in env.send_calls()] == [status]  # no further send after the first
    # Every message is still on the queue, held back (not handed straight to the next run), as a
    # fresh copy: its receive count starts again, so no outage makes SQS dead-letter it.
    assert env.queue_counts() == (0, 0)
    assert env.delayed() == 3
    assert summary.requeued == 3
    assert env.dlq() == []
    assert {doc["state"] for doc in env.ledger().values()} == {"pending"}  # nothing recorded as failed


def test_exhausted_openai_quota_sends_the_template_text_and_stops_asking(env: Env) -> None:
    users = [env.add_user(name)[0] for name in ("Myra Gupta", "Kabir Shah", "Zoya Khan")]
    bodies = [event("site_visit_reminder", uid, scheduled_at=VISIT_AT) for uid in users]
    for body in bodies:
        env.enqueue(body)
    clients.inject_faults(env.openai, [{"count": 3, "status": 429, "error_code": "insufficient_quota"}])

    summary = make_processor(env, concurrency=1).process(receive_all(env))

    # The reminders still go, with the template text; OpenAI is asked once, not once per message.
    assert (summary.sent, summary.failed, summary.dead_lettered) == (3, 0, 0)
    assert dict(summary.fallback_reasons) == {"openai_insufficient_quota": 3}
    assert len(env.chat_calls()) == 1
    ledger = env.ledger()
    for body in bodies:
        doc = ledger[body["event_id"]]
        assert (doc["state"], doc["text_source"], doc["fallback_reason"]) == (
            "sent", "fallback", "openai_insufficient_quota",
        )  # fmt: skip
        assert VISIT_TEXT in doc["text"]
    assert len(env.outbox()) == 3
    assert env.dlq() == []


def test_a_closed_window_without_a_template_stops_the_batch_instead_of_sending_free_text(env: Env) -> None:
    uid, _ = env.add_user("Pari Verma")  # never wrote to us
    env.enqueue(event("cost_sheet_followup", uid, event_id="evt-no-template"))
    templates = {k: v for k, v in TEMPLATES.items() if k != "cost_sheet_followup"}

    summary = make_processor(env, templates=templates).process(receive_all(env))

    # A configuration problem is an outage, not a bad message: nothing failed, nothing lost.
    assert (summary.failed, summary.sent, summary.left_for_redelivery) == (0, 0, 1)
    assert summary.account_error_code == "no_template"
    assert env.ledger()["evt-no-template"]["state"] == "pending"
    assert env.outbox() == []
    assert env.dlq() == []
    assert (env.queue_counts(), env.delayed()) == ((0, 0), 1)


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
    def text(value: str, message_id: str) -> NewText:
        return NewText(event_type="x", user_id="u", text=value, text_source="openai", fallback_reason=None,
                       sqs_message_id=message_id)  # fmt: skip

    first = ledger.claim("e", text("one", "m1"))
    again = ledger.claim("e", text("two", "m2"))
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


# -- ambiguous sends ----------------------------------------------------------------------------


def _wait_for_outbox(env: Env, count: int, seconds: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        outbox = env.outbox()
        if len(outbox) >= count:
            return outbox
        time.sleep(0.05)
    raise AssertionError(f"the outbox never reached {count} message(s): {env.outbox()}")


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        # WhatsApp applies the send after 1.5 s; the client gave up reading at 0.5 s.
        ({"count": 1, "delay": 1.5}, "timeout"),
        # WhatsApp applies the send, then the connection drops before the answer.
        ({"count": 1, "answer": "drop"}, "connection_error"),
    ],
)
def test_a_lost_answer_is_never_retried_blind_and_resent_once_after_the_grace_period(
    env: Env, fault: dict[str, Any], code: str
) -> None:
    uid, phone = env.add_user("Ira Bhatt", wrote_ago=timedelta(hours=1))
    body = event("inquiry_followup", uid, event_id="evt-lost-answer")
    env.enqueue(body)
    clients.inject_faults(env.whatsapp, [fault])

    messages = receive_all(env)
    first = make_processor(env, whatsapp_timeout=0.5, grace_seconds=600).process(messages)

    assert (first.sent, first.unknown_outcome, first.left_for_redelivery, first.failed) == (0, 1, 1, 0)
    [delivered] = _wait_for_outbox(env, 1)  # it did go out, once
    assert delivered["to"] == phone
    assert delivered["biz_opaque_callback_data"] == "evt-lost-answer"  # so its receipt finds the ledger
    doc = env.ledger()["evt-lost-answer"]
    assert (doc["state"], doc["error_code"], doc.get("wamid")) == ("unknown_outcome", code, None)
    assert doc["unknown_outcome_at"]
    # Held back for the grace period as a fresh delayed copy (its SQS receives start again), not lost.
    assert (env.queue_counts(), env.delayed(), first.requeue_fallbacks) == ((0, 0), 1, 0)

    # Redelivered inside the grace period: still no second send.
    env.delays_end()
    messages = receive_all(env)
    assert [receive_count(m) for m in messages] == [1]
    second = make_processor(env, grace_seconds=600).process(messages)
    assert (second.sent, second.left_for_redelivery) == (0, 1)
    assert len(env.send_calls()) == 1

    # No receipt arrived and the grace period is over: sent exactly once more.
    env.delays_end()
    third = make_processor(env, grace_seconds=0).process(receive_all(env))
    assert (third.sent, third.resent_after_grace) == (1, 1)
    assert len(env.outbox()) == 2
    doc = env.ledger()["evt-lost-answer"]
    assert (doc["state"], doc["unknown_resends"]) == ("sent", 1)
    assert env.queue_counts() == (0, 0)

    # A later copy of the event is a duplicate.
    env.enqueue(body)
    fourth = make_processor(env, grace_seconds=0).process(receive_all(env))
    assert (fourth.duplicates, fourth.sent) == (1, 0)
    assert len(env.outbox()) == 2


def test_a_5xx_without_an_error_body_is_an_unknown_outcome(env: Env) -> None:
    uid, _ = env.add_user("Om Prakash")
    env.enqueue(event("inquiry_followup", uid, event_id="evt-502"))
    clients.inject_faults(env.whatsapp, [{"count": 1, "status": 502, "body": ""}])

    summary = make_processor(env, attempts=3).process(receive_all(env))

    assert (summary.unknown_outcome, summary.sent) == (1, 0)
    assert [c["status"] for c in env.send_calls()] == [502]  # not retried
    assert env.ledger()["evt-502"]["state"] == "unknown_outcome"


def test_a_crash_mid_send_waits_for_the_grace_period_from_when_the_send_started(env: Env) -> None:
    uid, _ = env.add_user("Tara Sen")
    body = event("inquiry_followup", uid, event_id="evt-crash")
    env.db.followup_deliveries.insert_one({
        "_id": "evt-crash", "state": "sending", "text": "Hi Tara, stored.", "attempts": 1, "user_id": uid,
        "sending_at": datetime.now(UTC) - timedelta(minutes=20),
    })  # fmt: skip
    env.enqueue(body)

    summary = make_processor(env, grace_seconds=15 * 60).process(receive_all(env))

    # Started 20 minutes ago, no receipt since: past the grace period, sent once more.
    assert (summary.sent, summary.resent_after_grace) == (1, 1)
    [message] = env.outbox()
    assert template_params(message) == ["Hi Tara, stored."]
    assert env.ledger()["evt-crash"]["state"] == "sent"


# -- send-time checks, ids, output guard --------------------------------------------------------


def test_reminders_that_no_longer_hold_are_skipped_with_their_reason(env: Env) -> None:
    later = VISIT_AT + timedelta(days=1)
    cases = {
        "evt-past": ({}, datetime.now(UTC) - timedelta(hours=1), "expired"),
        "evt-cancelled": ({"scheduled_at": VISIT_AT, "status": "cancelled"}, VISIT_AT, "superseded"),
        "evt-moved": ({"scheduled_at": later, "status": "scheduled"}, VISIT_AT, "superseded"),
        "evt-done": ({"scheduled_at": VISIT_AT, "status": "completed"}, VISIT_AT, "expired"),
        "evt-current": ({"scheduled_at": VISIT_AT, "status": "scheduled"}, VISIT_AT, None),
    }
    for event_id, (visit, scheduled_at, _) in cases.items():
        uid, _ = env.add_user(f"Buyer {event_id[4:]}")
        if visit:
            env.db.users.update_one({"_id": ObjectId(uid)}, {"$set": {"site_visit": visit}})
        env.enqueue(event("site_visit_reminder", uid, event_id=event_id, scheduled_at=scheduled_at))

    summary = make_processor(env).process(receive_all(env))

    ledger = env.ledger()
    for event_id, (_, _, reason) in cases.items():
        want = ("sent", None) if reason is None else ("skipped", reason)
        assert (ledger[event_id]["state"], ledger[event_id].get("reason")) == want, event_id
    assert summary.sent == 1
    assert dict(summary.skip_reasons) == {"expired": 2, "superseded": 2}
    assert len(env.outbox()) == 1
    assert len(env.chat_calls()) == 1  # no OpenAI call for a reminder that will not go out


def test_a_user_id_stored_as_a_string_is_found(env: Env) -> None:
    hex_id = str(ObjectId())
    env.db.users.insert_one({"_id": hex_id, "name": "Neel Shah", "mobile": "+91 98111 22233"})
    env.enqueue(event("inquiry_followup", hex_id, event_id="evt-string-id"))

    summary = make_processor(env).process(receive_all(env))

    assert summary.sent == 1
    assert [m["to"] for m in env.outbox()] == ["+919811122233"]


def test_a_good_answer_is_sent_as_written_and_a_bad_one_falls_back_and_is_counted(env: Env) -> None:
    good, good_phone = env.add_user("Kabir Malhotra", wrote_ago=timedelta(hours=1))
    bad, bad_phone = env.add_user("Call me on 98765 43210 or pay@okaxis", wrote_ago=timedelta(hours=1))
    env.enqueue(event("site_visit_reminder", good, event_id="evt-good", scheduled_at=VISIT_AT))
    env.enqueue(event("inquiry_followup", bad, event_id="evt-bad"))

    summary = make_processor(env).process(receive_all(env))

    outbox = {m["to"]: m["text"]["body"] for m in env.outbox()}
    # The primary path: the model's text, the placeholder filled with the one IST format.
    assert outbox[good_phone] == (
        f"Hi Kabir Malhotra, a friendly reminder that your site visit is at {VISIT_TEXT}. "
        "We look forward to showing you the 2BHK homes!"
    )
    # The model copied the number and the UPI id from the name: the template text instead.
    assert outbox[bad_phone].startswith("Hi there, thank you for your interest")
    assert "98765" not in outbox[bad_phone]
    ledger = env.ledger()
    assert (ledger["evt-good"]["text_source"], ledger["evt-bad"]["text_source"]) == ("openai", "fallback")
    assert ledger["evt-bad"]["fallback_reason"].startswith("invalid_output:contains_")
    assert (summary.texts_generated, summary.fallbacks, summary.fallback_rate) == (2, 1, 0.5)


def test_a_malformed_copy_never_blocks_the_valid_copy_of_the_event(env: Env) -> None:
    uid, phone = env.add_user("Sana Mirza")
    valid = event("inquiry_followup", uid, event_id="evt-shared")
    env.enqueue({"event_id": "evt-shared", "event_type": "inquiry_followup"})  # no user_id
    first = make_processor(env).process(receive_all(env))
    assert first.dead_lettered == 1

    env.enqueue(valid)
    second = make_processor(env).process(receive_all(env))

    assert second.sent == 1
    assert [m["to"] for m in env.outbox()] == [phone]
    assert env.ledger()["evt-shared"]["state"] == "sent"


def test_a_fixed_cause_and_a_redelivery_send_the_event_exactly_once(env: Env) -> None:
    uid, _ = env.add_user("Vivaan Kapoor", mobile="12345")
    body = event("inquiry_followup", uid, event_id="evt-fixme")
    env.enqueue(body)
    make_processor(env).process(receive_all(env))
    assert env.ledger()["evt-fixme"]["state"] == "dead_lettered"

    env.db.users.update_one({"_id": ObjectId(uid)}, {"$set": {"mobile": "+91 98222 33344"}})
    env.enqueue(body)  # what a redrive does
    summary = make_processor(env).process(receive_all(env))

    assert (summary.sent, summary.reopened) == (1, 1)
    doc = env.ledger()["evt-fixme"]
    assert doc["state"] == "sent"
    assert doc["history"][0]["state"] == "dead_lettered"
    env.enqueue(body)  # a second redrive
    again = make_processor(env).process(receive_all(env))
    assert (again.sent, again.duplicates) == (0, 1)
    assert [m["to"] for m in env.outbox()] == ["+919822233344"]
