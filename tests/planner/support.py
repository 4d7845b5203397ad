"""Helpers for the planner tests: seed users and interactions, run the DAG, read the queue."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from tests.alerts import AlertInbox
from tests.helpers import task_states, xcom_value

IST = ZoneInfo("Asia/Kolkata")
_numbers = itertools.count(1)


def floor5(when: datetime) -> datetime:
    """The 5-minute boundary at or before ``when`` (a planning point)."""
    when = when.astimezone(UTC)
    return when.replace(minute=when.minute - when.minute % 5, second=0, microsecond=0)


@dataclass
class PlannerEnv:
    stack: Any
    db: Any
    sqs: Any
    alerts: AlertInbox

    # -- seeding -------------------------------------------------------------------------------

    def add_user(self, name: str = "Priya Sharma", **fields: Any) -> str:
        digits = f"97{next(_numbers):08d}"
        user = {
            "_id": ObjectId(),
            "name": name,
            "mobile": f"+91 {digits[:5]} {digits[5:]}",
            "preferred_configuration": "2BHK",
            "ranking": "Medium",
            "inquiry_type": "general",
            **fields,
        }
        self.db.users.insert_one(user)
        return str(user["_id"])

    def add_visit(self, at: datetime, status: str = "scheduled", **fields: Any) -> str:
        return self.add_user(site_visit={"scheduled_at": at, "status": status}, **fields)

    def message(self, user_id: str, at: datetime, role: str = "user", as_string: bool = False) -> ObjectId:
        doc = {
            "_id": ObjectId(),
            "user_id": user_id if as_string else ObjectId(user_id),
            "session_id": f"s-{user_id[-6:]}",
            "role": role,
            "text": "hello",
            "timestamp": at,
        }
        self.db.interactions.insert_one(doc)
        return doc["_id"]

    # -- reading -------------------------------------------------------------------------------

    @property
    def queues(self) -> tuple[str, str]:
        """The planner's two queues: the nudges' and the reminders'."""
        return self.stack.queue_url, self.stack.reminders_queue_url

    def queue_counts(self, queue_url: str | None = None) -> dict[str, int]:
        """Messages on both of the planner's queues (or on ``queue_url`` only)."""
        counts = {"visible": 0, "delayed": 0, "in_flight": 0}
        for url in [queue_url] if queue_url else self.queues:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesDelayed",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            counts["visible"] += int(attrs["ApproximateNumberOfMessages"])
            counts["delayed"] += int(attrs["ApproximateNumberOfMessagesDelayed"])
            counts["in_flight"] += int(attrs["ApproximateNumberOfMessagesNotVisible"])
        return counts

    def receive_all(self) -> list[dict[str, Any]]:
        """Every visible message's body (parsed) plus its attributes and ``_queue`` (the queue's
        name), from both queues; deletes them."""
        found = []
        for url in self.queues:
            while True:
                messages = self.sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"],
                ).get("Messages", [])  # fmt: skip
                if not messages:
                    break
                for message in messages:
                    attrs = {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}
                    found.append({**json.loads(message["Body"]), "_attributes": attrs, "_queue": url.rsplit("/", 1)[1]})
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return found

    def wait_visible(self, count: int, timeout: float) -> float:
        """Wait (bounded) until ``count`` messages are visible; returns the wall time it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue_counts()["visible"] >= count:
                return time.time()
            time.sleep(0.25)
        raise AssertionError(f"{count} message(s) not visible within {timeout}s: {self.queue_counts()}")

    def plans(self) -> dict[str, dict[str, Any]]:
        return {doc["_id"]: doc for doc in self.db.followup_plans.find()}

    def set_rules(self, rules: dict[str, Any]) -> None:
        from airflow.models import Variable

        Variable.set("leadflow_followup_rules", json.dumps(rules))


def run_planner(dag: Any, point: datetime) -> dict[str, Any]:
    """One real run whose planning point (data interval end) is ``point``; returns its summary."""
    assert point == floor5(point), "a planning point is a 5-minute boundary"
    run = dag.test(logical_date=point)
    assert run.state == "success", task_states(run)
    return xcom_value(run, "plan_followups")
