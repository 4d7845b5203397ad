"""A wait the processor chooses does not spend the message's SQS receives.

SQS moves a message to the DLQ once it has been received more than ``maxReceiveCount`` (5)
times, reason or not. That count is meant for messages that crash their consumer. A message
that waits out an unknown outcome's grace period is not one: left in the queue with a visibility
change, each wait costs a receive, so a message that had already spent receives on other
troubles (an outage's backoffs, workers lost mid-batch) reached the DLQ as ``no_reason`` before
its one resend, and the buyer never got it (``make chaos`` seed 5: 58 follow-ups). The wait is
now a fresh delayed copy (leadflow.followups.requeue), whose receive count starts again.

SQS is the strict stand-in on a virtual clock (as in test_reminder_deadlines), so the grace
period and the receive counts play out over simulated time; the expectation (sent once, nothing
in either queue) is the promise itself, checked on the WhatsApp stand-in's outbox.
"""

from __future__ import annotations

import json
from datetime import timedelta

from devstack import clients
from tests.followups.support import Env, event
from tests.followups.test_reminder_deadlines import (  # noqa: F401 - virtual_sqs is a fixture
    MAX_RECEIVES,
    RECEIVE_VISIBILITY,
    START,
    VirtualSqs,
    _depth,
    _processor,
    _receive,
    virtual_sqs,
)

GRACE = timedelta(minutes=15)  # ProcessorSettings' default, leadflow_followup_unknown_outcome_grace_minutes


def test_a_send_interrupted_after_the_message_spent_its_receives_is_resent_once_not_dead_lettered(
    env: Env,
    virtual_sqs: VirtualSqs,  # noqa: F811 - the fixture imported above
) -> None:
    clock = virtual_sqs.clock
    clock.t = START.timestamp()
    virtual_sqs.reset()
    sqs = virtual_sqs.client()
    queue, dlq = virtual_sqs.queue_pair(sqs, "waits")
    uid, phone = env.add_user("Tara Sen")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event("inquiry_followup", uid, event_id="evt-waits")))
    # Four receives whose consumers died (a worker lost, a triggerer lost, ...), the last one in
    # the middle of the send: the ledger says `sending`. The next receive is the last SQS allows.
    for _ in range(MAX_RECEIVES - 1):
        assert len(_receive(sqs, queue, 10)) == 1
        clock.t += RECEIVE_VISIBILITY
    env.db.followup_deliveries.insert_one({
        "_id": "evt-waits", "state": "sending", "text": "Hi Tara, your cost sheet is ready.", "attempts": 1,
        "user_id": uid, "event_type": "inquiry_followup", "sending_at": clock.now() - timedelta(minutes=1),
    })  # fmt: skip

    crashed_at = clock.now() - timedelta(minutes=1)
    processor = _processor(env, sqs, clock, queue, dlq, concurrency=2, outage_delay=900)
    resent_at = []
    horizon = clock.t + 3 * GRACE.total_seconds()
    while clock.t < horizon:  # a run a minute
        messages = _receive(sqs, queue, 10)
        if messages and processor.process(messages).resent_after_grace:
            resent_at.append(clock.now())
        clock.t += 60

    assert [m["to"] for m in clients.outbox(env.whatsapp)] == [phone]  # once, not lost
    assert env.ledger()["evt-waits"]["state"] == "sent"
    assert len(resent_at) == 1
    assert resent_at[0] - crashed_at >= GRACE  # only after the grace period
    assert (_depth(sqs, queue), _depth(sqs, dlq)) == (0, 0)
