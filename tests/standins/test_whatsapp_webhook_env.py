"""The WhatsApp stand-in wired from its environment, as docker-compose.yaml starts it: no one calls
``/_control/webhook``, yet its receipts land on the queue, signed with the given app secret."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from devstack import clients
from devstack.whatsapp_receipts import ENV_APP_SECRET, ENV_QUEUE_URL, ENV_SQS_ENDPOINT, sign
from tests.helpers import REPO, wait_for

TEXT = {"messaging_product": "whatsapp", "to": "919876543210", "type": "text", "text": {"body": "Hello"}}


def test_a_standin_started_with_the_webhook_env_posts_signed_receipts(stack: Any, tmp_path: Path) -> None:
    sqs = stack.boto3_client("sqs")
    url = sqs.create_queue(QueueName=f"statuses-env-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        ENV_QUEUE_URL: url,
        ENV_APP_SECRET: "env-secret",
        ENV_SQS_ENDPOINT: stack.sqs_url,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.whatsapp_server", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        base = process.stdout.readline().split()[1]
        clients.wait_healthy(base, timeout=5)
        assert requests.get(f"{base}/_control/webhook", timeout=5).json() == {
            "configured": True, "queue_url": url, "sqs_endpoint": stack.sqs_url,
        }  # fmt: skip
        answer = requests.post(f"{base}/v25.0/1/messages", json=TEXT, headers={"Authorization": "Bearer t"}, timeout=5)
        assert answer.status_code == 200, answer.text

        found: list[dict[str, Any]] = []

        def three() -> bool:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            found.extend(got.get("Messages", []))
            return len(found) >= 3

        wait_for("3 receipts on the queue", three, time.monotonic() + 20, every=0.1)
    finally:
        process.terminate()
        process.wait(timeout=5)
        sqs.delete_queue(QueueUrl=url)
    for message in found:
        signature = message["MessageAttributes"]["signature"]["StringValue"]
        assert signature == sign(message["Body"].encode(), "env-secret")
