"""Read what the DAGs published to the alerts SNS topic, through a subscribed SQS queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class AlertInbox:
    sqs: Any
    queue_url: str

    def read(self) -> list[dict[str, Any]]:
        """Every alert published since the inbox was opened (their JSON bodies)."""
        alerts: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = answer.get("Messages", [])
            if not messages:
                return alerts
            for message in messages:
                envelope = json.loads(message["Body"])
                body = json.loads(envelope["Message"])
                body["_subject"] = envelope.get("Subject")
                alerts.append(body)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@contextmanager
def alert_inbox(stack) -> Iterator[AlertInbox]:
    sqs = stack.boto3_client("sqs")
    sns = stack.boto3_client("sns")
    queue_url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=stack.alerts_topic_arn, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    try:
        yield AlertInbox(sqs, queue_url)
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=queue_url)
