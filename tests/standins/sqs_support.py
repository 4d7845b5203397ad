"""What the SQS stand-in tests share: the quota their server runs with, and boto3 shorthands."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

# SQS's quota is 120,000 per standard queue; 10 lets a test reach it with one receive.
IN_FLIGHT_LIMIT = 10


def new_queue(sqs: Any, **attributes: str) -> str:
    return sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}", Attributes=attributes)["QueueUrl"]


def counts(sqs: Any, url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {"visible": int(got[names[0]]), "in_flight": int(got[names[1]]), "delayed": int(got[names[2]])}


def send(sqs: Any, url: str, bodies: list[str], **fields: Any) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(n), "MessageBody": body, **fields} for n, body in enumerate(bodies[start : start + 10])]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def receive(sqs: Any, url: str, **options: Any) -> list[dict[str, Any]]:
    return sqs.receive_message(QueueUrl=url, AttributeNames=["All"], **options).get("Messages", [])


def error_code(call: Any) -> str:
    """The error's code as the API reference names it (SQS's JSON protocol may prefix it, as moto does)."""
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"].removeprefix("AWS.SimpleQueueService.")
