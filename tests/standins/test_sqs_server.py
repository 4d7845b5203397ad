"""The SQS stand-in's lazily computed queue attributes answer exactly what moto computes."""

from __future__ import annotations

import json

import pytest
from moto.sqs.models import Queue

from devstack.sqs_server import LazyQueueAttributes

MOTOS_OWN = Queue.__dict__["attributes"].fget  # this process never installs the lazy map
ACCOUNT = "123456789012"
DLQ_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:dlq"


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("plain", {}),
        ("with-redrive", {"VisibilityTimeout": "1200", "DelaySeconds": "3"}),
        ("with-policy", {"Policy": json.dumps({"Version": "2012-10-17", "Statement": []})}),
        ("orders.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
        ("with-kms", {"KmsMasterKeyId": "alias/aws/sqs"}),
    ],
)  # fmt: skip
def test_every_attribute_is_the_one_moto_computes(name: str, attributes: dict[str, str]) -> None:
    queue = Queue(name, region="us-east-1", account_id=ACCOUNT, **attributes)
    if name == "with-redrive":  # set after creation: moto would look the DLQ up in its backend
        queue.redrive_policy = {"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 5}
    lazy = LazyQueueAttributes(queue)
    assert dict(lazy) == MOTOS_OWN(queue)
    assert list(lazy) == list(MOTOS_OWN(queue))
    assert lazy.get("NoSuchAttribute") is None
    assert "NoSuchAttribute" not in lazy
