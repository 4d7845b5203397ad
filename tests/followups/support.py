"""Helpers for the follow-up tests: seed users, queue events, read every outcome."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from devstack import clients
from tests.alerts import AlertInbox
from tests.helpers import task_states, wait_for

TEMPLATES = {
    "site_visit_reminder": "site_visit_reminder_v1",
    "cost_sheet_followup": "cost_sheet_followup_v1",
    "inquiry_followup": "inquiry_followup_v1",
}
# Far enough in the future to be a real reminder (a past one is skipped as expired); a one-digit
# day, which the old time check got wrong. 16:55 IST = 11:25 UTC.
VISIT_AT = datetime(2031, 12, 3, 11, 25, tzinfo=UTC)
VISIT_TEXT = "Wednesday 3 Dec, 4:55 PM"
_numbers = itertools.count(1)


@dataclass
class Env:
    """A clean stack plus handles on everything a follow-up test looks at."""

    stack: Any
    db: Any
    sqs: Any
    alerts: AlertInbox

    @property
    def whatsapp(self) -> str:
        return self.stack.control_url("whatsapp")

    @property
    def openai(self) -> str:
        return self.stack.control_url("openai")

    # -- seeding -------------------------------------------------------------------------------

    def add_user(
        self,
        name: Any = "Priya Sharma",
        *,
        mobile: Any = None,
        configuration: Any = "2BHK",
        inquiry_type: Any = "site_visit",
        opt_in: Any = "absent",
        wrote_ago: timedelta | None = None,
        expect: str | None = None,
    ) -> tuple[str, str]:
        """Insert a user (and their last message ``wrote_ago``); return (user_id hex, E.164).

        Without ``mobile`` the user gets a fresh number; with one, ``expect`` is its E.164 form.
        """
        digits = f"98{next(_numbers):08d}"
        user: dict[str, Any] = {
            "_id": ObjectId(),
            "name": name,
            "mobile": mobile if mobile is not None else f"+91 {digits[:5]} {digits[5:]}",
            "preferred_configuration": configuration,
            "ranking": "High",
            "inquiry_type": inquiry_type,
        }
        if opt_in != "absent":
            user["whatsapp_opt_in"] = opt_in
        self.db.users.insert_one(user)
        if wrote_ago is not None:
            now = datetime.now(UTC)
            self.db.interactions.insert_many(
                [
                    {"user_id": user["_id"], "session_id": "s1", "role": "user", "text": "hi",
                     "timestamp": now - wrote_ago},
                    # A later bot message must not count as the user writing.
                    {"user_id": user["_id"], "session_id": "s1", "role": "assistant", "text": "hello",
                     "timestamp": now - wrote_ago + timedelta(seconds=5)},
                ]
            )  # fmt: skip
        return str(user["_id"]), expect if mobile is not None else f"+91{digits}"

    def enqueue(self, body: Any) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.sqs.send_message(QueueUrl=self.stack.queue_url, MessageBody=text)["MessageId"]

    # -- reading outcomes ----------------------------------------------------------------------

    def outbox(self) -> list[dict[str, Any]]:
        return clients.outbox(self.whatsapp)

    def queue_counts(self, queue_url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages left on the main queue (or on ``queue_url``)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def delayed(self, queue_url: str | None = None) -> int:
        """Messages on the main queue (or ``queue_url``) that SQS holds back (``DelaySeconds``)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.stack.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessagesDelayed"])

    def delays_end(self, timeout: float = 10.0) -> None:
        """Play SQS's clock: every delayed message (a wait the processor chose, as a fresh copy)
        is visible now. SIGUSR2 to the stack's SQS stand-in (devstack.sqs_server), which does it
        on a thread of its own; nothing else delays messages meanwhile, so none delayed = done."""
        queues = (self.stack.queue_url, self.stack.statuses_queue_url)
        os.kill(self.stack.pids["sqs"], signal.SIGUSR2)
        wait_for("the SQS stand-in to end its delays", lambda: not any(self.delayed(url) for url in queues),
                 time.monotonic() + timeout, every=0.05)  # fmt: skip

    def dlq(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Every DLQ message (of the follow-ups, or ``queue_url``) as {body, **its attributes},
        e.g. reason, reason_code, event_id (drains the DLQ)."""
        found = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=queue_url or self.stack.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                MessageAttributeNames=["All"], VisibilityTimeout=60,
            ).get("Messages", [])  # fmt: skip
            if not messages:
                return found
            for message in messages:
                attrs = {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}
                found.append({"body": message["Body"], **attrs})

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {doc["_id"]: doc for doc in self.db.followup_deliveries.find()}

    def chat_calls(self) -> list[dict[str, Any]]:
        return [c for c in clients.calls(self.openai) if c["path"].endswith("/chat/completions")]

    def send_calls(self) -> list[dict[str, Any]]:
        return [c for c in clients.calls(self.whatsapp) if c["path"].endswith("/messages")]


def event(
    event_type: str,
    user_id: str,
    *,
    event_id: str | None = None,
    scheduled_at: datetime | None = None,
    media: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or f"evt-{uuid.uuid4().hex[:12]}",
        "event_type": event_type,
        "user_id": user_id,
    }
    if scheduled_at is not None:
        body["scheduled_at"] = scheduled_at.isoformat()
    if media is not None:
        body["media"] = media
    return body


def template_params(message: dict[str, Any]) -> list[str]:
    return [p.get("text") for c in message["template"]["components"] if c["type"] == "body" for p in c["parameters"]]


def run_dag(dag: Any, max_wait_seconds: int = 3) -> Any:
    """One real run of the DAG through ``dag.test()``; a run must never fail."""
    run = dag.test(run_conf={"max_wait_seconds": max_wait_seconds})
    assert run.state == "success", task_states(run)
    return run
