"""The SQS stand-in's clock jump that ``make chaos`` uses to skip a dead consumer's 20 minutes:
SIGUSR1 makes every in-flight message visible at once, with its receive counted, and nothing else
(a delayed message stays delayed, a deleted one stays deleted). Runs in ``make test``."""

from __future__ import annotations

import os
import signal
import time
import uuid

from devstack.sqs_server import running_sqs_server


def test_sigusr1_makes_every_in_flight_message_visible_and_nothing_else() -> None:
    with running_sqs_server() as server:
        sqs = server.client()
        url = sqs.create_queue(QueueName=f"clock-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        for body in ("held", "deleted"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=900)
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1200)["Messages"]
        assert sorted(m["Body"] for m in received) == ["deleted", "held"]
        deleted = next(m for m in received if m["Body"] == "deleted")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=deleted["ReceiptHandle"])
        assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages")

        os.kill(server.pid, signal.SIGUSR1)

        again: list[dict] = []
        deadline = time.monotonic() + 10
        while not again and time.monotonic() < deadline:
            again = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])  # fmt: skip
        assert [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in again] == [("held", "2")]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
        assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
