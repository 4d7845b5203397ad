"""Put follow-up events on the local SQS queue, as the EventBridge rule does in production.

    python -m devstack.events --state-dir .local            # a few demo events for seeded users
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo

from devstack.services import Stack
from leadflow.config import DEFAULT_DATABASE, USERS


def raw_event(event_type: str, user_id: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{uuid.uuid4().hex[:12]}", "event_type": event_type, "user_id": user_id, **extra}


def eventbridge_envelope(detail: dict[str, Any]) -> dict[str, Any]:
    """What an EventBridge rule with an SQS target delivers: the payload sits in ``detail``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "leadflow.followup",
        "source": "leadflow.chatbot",
        "account": "123456789012",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def demo_events(stack: Stack, count: int = 6) -> list[dict[str, Any]]:
    with pymongo.MongoClient(stack.mongo_uri) as client:
        users = list(
            client[DEFAULT_DATABASE][USERS].find(
                {"whatsapp_opt_in": {"$ne": False}, "name": {"$type": "string"}}, {"_id": 1}, limit=count
            )
        )
    visit = (datetime.now(UTC) + timedelta(minutes=15)).replace(second=0, microsecond=0)
    events: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        user_id = str(user["_id"])
        if n % 3 == 0:
            events.append(raw_event("site_visit_reminder", user_id, scheduled_at=visit.isoformat()))
        elif n % 3 == 1:
            media = {"type": "image", "url": "https://example.com/cost-sheet.png", "caption": "Cost sheet"}
            events.append(eventbridge_envelope(raw_event("cost_sheet_followup", user_id, media=media)))
        else:
            events.append(raw_event("inquiry_followup", user_id))
    return events


def queue_demo_events(stack: Stack, count: int = 6) -> int:
    sqs = stack.boto3_client("sqs")
    events = demo_events(stack, count)
    for event in events:
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
    return len(events)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=".local")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args(argv)
    stack = Stack.load(f"{args.state_dir}/stack")
    print(f"queued {queue_demo_events(stack, args.count)} events on {stack.queue_url}")


if __name__ == "__main__":
    main()
