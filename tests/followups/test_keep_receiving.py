"""process_messages keeps receiving from SQS while its budget allows (issue 23): against the stand-ins."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from devstack import clients
from leadflow.followups.budget import one_message_worst_seconds, receive_window_seconds
from leadflow.followups.processor import FollowupProcessor
from tests.followups.support import Env, event
from tests.followups.test_followups_processor import make_processor

SENSOR_BATCH = 10  # what the sensor handed over: one receive's worth, the rest stays queued


def receiving_processor(env: Env, *, pacing: float, budget: float = 600.0, concurrency: int = 4) -> FollowupProcessor:
    processor = make_processor(env, pacing=pacing, concurrency=concurrency)
    processor.settings = replace(processor.settings, keep_receiving=True, budget_seconds=budget)
    return processor


def sensor_batch(env: Env) -> list[dict[str, Any]]:
    messages = env.sqs.receive_message(
        QueueUrl=env.stack.queue_url, MaxNumberOfMessages=SENSOR_BATCH, WaitTimeSeconds=0, VisibilityTimeout=600
    )["Messages"]
    assert len(messages) == SENSOR_BATCH
    return messages


def test_a_run_keeps_receiving_until_the_queue_is_empty_and_sends_each_event_once(env: Env) -> None:
    clients.set_settings(env.whatsapp, pair_rate_limit_seconds=0.5)  # the stand-in refuses faster pairs
    busy, busy_phone = env.add_user("Kabir Nair", wrote_ago=timedelta(hours=1))
    queued = [event("inquiry_followup", busy)]
    queued += [
        event("inquiry_followup", env.add_user(f"Buyer {n}", wrote_ago=timedelta(hours=1))[0]) for n in range(30)
    ]
    # The same buyer again, after more than one receive's worth: it arrives in a later receive
    # while the first may still be in progress, and must still be paced.
    queued += [event("cost_sheet_followup", busy)]
    queued += [event("inquiry_followup", env.add_user(f"Late {n}", wrote_ago=timedelta(hours=1))[0]) for n in range(5)]
    for body in queued:
        env.enqueue(body)

    summary = receiving_processor(env, pacing=0.5).process(sensor_batch(env))

    assert summary.receives_in_run >= (len(queued) - SENSOR_BATCH) // 10
    assert (summary.received, summary.sent, summary.left_for_redelivery) == (len(queued), len(queued), 0)
    assert env.queue_counts() == (0, 0)  # every message deleted after its outcome
    ledger = env.ledger()
    assert {b["event_id"] for b in queued} == {k for k, d in ledger.items() if d["state"] == "sent"}
    sends_per_event = Counter(m["biz_opaque_callback_data"] for m in env.outbox())
    assert sends_per_event == Counter({b["event_id"]: 1 for b in queued})
    times = sorted(datetime.fromisoformat(m["received_at"]) for m in env.outbox() if m["to"] == busy_phone)
    assert len(times) == 2
    assert times[1] - times[0] >= timedelta(seconds=0.5)


def test_the_budget_stops_the_receiving(env: Env) -> None:
    for n in range(SENSOR_BATCH + 15):
        env.enqueue(event("inquiry_followup", env.add_user(f"Buyer {n}", wrote_ago=timedelta(hours=1))[0]))
    # A budget of one message's worst case leaves no time to receive: a message received now
    # could not be sure to start within it.
    budget = one_message_worst_seconds(0.5)
    assert receive_window_seconds(budget, 0.5) == 0

    summary = receiving_processor(env, pacing=0.5, budget=budget).process(sensor_batch(env))

    assert (summary.receives_in_run, summary.received, summary.sent) == (0, SENSOR_BATCH, SENSOR_BATCH)
    assert env.queue_counts() == (15, 0)  # untouched: still visible for the next run


def test_the_receive_window_is_the_budget_less_one_messages_worst_case() -> None:
    # Independent arithmetic from budget.py's terms: OpenAI 20 s x 3 + 2 x 8 s backoff, WhatsApp
    # (connect + read) x 4 attempts + 3 x 8 s backoff, the pacing wait, 10 s of round trips.
    from leadflow.messaging.whatsapp import CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S

    whatsapp = (CONNECT_TIMEOUT_S + DEFAULT_TIMEOUT_S) * 4 + 3 * 8
    assert receive_window_seconds(600, 6) == 600 - (76 + whatsapp + 6 + 10)
    assert receive_window_seconds(100, 6) == 0


def test_a_failed_receive_ends_the_receiving_not_the_run(env: Env) -> None:
    for n in range(SENSOR_BATCH + 5):
        env.enqueue(event("inquiry_followup", env.add_user(f"Buyer {n}", wrote_ago=timedelta(hours=1))[0]))
    processor = receiving_processor(env, pacing=0.5)
    # SQS refuses a visibility timeout over 12 h: a real error from the stand-in on the receive only.
    processor.settings = replace(processor.settings, receive_visibility_seconds=43_201)

    summary = processor.process(sensor_batch(env))

    assert (summary.receives_in_run, summary.sent, summary.errors) == (0, SENSOR_BATCH, 0)
    assert env.queue_counts() == (5, 0)


def test_one_thread_receives_more_as_soon_as_its_lane_is_idle(env: Env) -> None:
    """With one thread, room for more is one message: the run receives the next one once the lane
    is done, rather than waiting, lanes idle, for its receive window to close."""
    for n in range(SENSOR_BATCH + 5):
        env.enqueue(event("inquiry_followup", env.add_user(f"Buyer {n}", wrote_ago=timedelta(hours=1))[0]))
    # A window of a minute: the handed batch is sent well within it, so only a run waiting for
    # the window to close (sending nothing more) leaves the five queued.
    budget = one_message_worst_seconds(0.5) + 60

    summary = receiving_processor(env, pacing=0.5, budget=budget, concurrency=1).process(sensor_batch(env))

    assert summary.receives_in_run >= 1
    assert (summary.received, summary.sent) == (SENSOR_BATCH + 5, SENSOR_BATCH + 5)
    assert env.queue_counts() == (0, 0)
