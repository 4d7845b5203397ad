"""Benchmark: how late site-visit reminders go out while a burst of nudges is being sent.

    python -m bench.reminders [--nudges 5000] [--reminders 40] [--spread 60] [--mode both]

Starts its own stand-in stack (OpenAI answering in 500 ms, WhatsApp in 100 ms, as
``bench.followups``), queues ``--nudges`` nudges at once (the 09:00 IST release of the night's
nudges, or another producer's burst) and ``--reminders`` reminders whose due times are spread
over the first ``--spread`` seconds of the burst (SQS ``DelaySeconds``, as the planner sends
them), then runs the consumers the way the DAGs do, without Airflow: receive up to 200 messages
(20 receives of 10), process them with :class:`FollowupProcessor`, wait ``--handover`` seconds
(the sensor-to-task hand-over of a DAG run), repeat. Two designs:

* ``separate`` (what the project runs): reminders on ``leadflow-reminders`` with their own
  consumer (concurrency 16, 10 msg/s), nudges on ``leadflow-followups`` (concurrency 96, 60 msg/s);
* ``shared`` (before): everything on ``leadflow-followups``, one consumer (96, 60 msg/s).

Lateness = when the WhatsApp stand-in accepted the reminder minus its due time, in seconds;
printed as p50 / p95 / max per design, with the nudges sent by the time the last reminder went.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId

from bench.followups import OPENAI_LATENCY_S, WHATSAPP_LATENCY_S, build_processor
from devstack import clients
from devstack.services import Stack, recreate_queues, running_stack
from leadflow.followups.dag_settings import (
    DEFAULT_SEND_RATE,
    REMINDER_CONCURRENCY,
    REMINDER_SEND_RATE,
    SENSOR_MAX_MESSAGES,
    SENSOR_NUM_BATCHES,
    VISIBILITY_TIMEOUT_S,
)
from leadflow.mongo_indexes import ensure_indexes

NUDGE_CONCURRENCY = 96  # budget.DEFAULT_CONCURRENCY
LEAD = timedelta(minutes=15)


def _receive(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """One run's batch, as the sensor drains it."""
    batch: list[dict[str, Any]] = []
    for _ in range(SENSOR_NUM_BATCHES):
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=SENSOR_MAX_MESSAGES, WaitTimeSeconds=0 if batch else 1,
            VisibilityTimeout=VISIBILITY_TIMEOUT_S, MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])  # fmt: skip
        if not got:
            break
        batch += got
    return batch


def _consume(processor: Any, queue_url: str, handover: float, stop: threading.Event) -> None:
    while not stop.is_set():
        batch = _receive(processor.sqs, queue_url)
        if batch:
            processor.process(batch)
            time.sleep(handover)


def _seed(stack: Stack, nudges: int, reminders: int, spread: float, reminder_queue: str) -> dict[str, datetime]:
    """Queue the burst and the reminders; return each reminder's due time by event id."""
    db = pymongo.MongoClient(stack.mongo_uri, tz_aware=True).leadflow
    sqs = stack.boto3_client("sqs")
    db.users.delete_many({})
    db.followup_deliveries.delete_many({})
    ensure_indexes(db)
    users = [{"_id": ObjectId(), "name": f"Buyer {n}", "mobile": f"+91 9{n:09d}"} for n in range(nudges + reminders)]
    now = datetime.now(UTC)
    due: dict[str, datetime] = {}
    for n, user in enumerate(users[nudges:]):
        at = now + timedelta(seconds=spread * (n + 1) / reminders)
        user["site_visit"] = {"scheduled_at": (at + LEAD).replace(microsecond=0), "status": "scheduled"}
        due[f"reminder-{n}"] = user["site_visit"]["scheduled_at"] - LEAD
    db.users.insert_many(users)
    bodies = [{"event_id": f"nudge-{n}", "event_type": "inquiry_followup", "user_id": str(u["_id"])}
              for n, u in enumerate(users[:nudges])]  # fmt: skip
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies[start : start + 10])]
        sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=entries)
    for n, user in enumerate(users[nudges:]):
        event_id = f"reminder-{n}"
        visit = user["site_visit"]["scheduled_at"]
        body = {"event_id": event_id, "event_type": "site_visit_reminder", "user_id": str(user["_id"]),
                "scheduled_at": visit.isoformat(), "due_at": due[event_id].isoformat()}  # fmt: skip
        delay = max(0, round((due[event_id] - datetime.now(UTC)).total_seconds()))
        sqs.send_message(QueueUrl=reminder_queue, MessageBody=json.dumps(body), DelaySeconds=delay)
    return due


def run_design(stack: Stack, design: str, args: argparse.Namespace) -> dict[str, Any]:
    recreate_queues(stack)
    clients.reset(stack.control_url("whatsapp"))
    clients.set_settings(stack.control_url("whatsapp"), latency=WHATSAPP_LATENCY_S, pair_rate_limit_seconds=6.0)
    separate = design == "separate"
    reminder_queue = stack.reminders_queue_url if separate else stack.queue_url
    due = _seed(stack, args.nudges, args.reminders, args.spread, reminder_queue)
    consumers = [(build_processor(stack, concurrency=NUDGE_CONCURRENCY, send_rate=DEFAULT_SEND_RATE), stack.queue_url)]
    if separate:
        reminder_processor = build_processor(
            stack, concurrency=REMINDER_CONCURRENCY, send_rate=REMINDER_SEND_RATE,
            queue_url=stack.reminders_queue_url, dlq_url=stack.reminders_dlq_url,
        )  # fmt: skip
        consumers.append((reminder_processor, stack.reminders_queue_url))
    stop = threading.Event()
    threads = [threading.Thread(target=_consume, args=(p, q, args.handover, stop), daemon=True) for p, q in consumers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    db = pymongo.MongoClient(stack.mongo_uri, tz_aware=True).leadflow
    while time.monotonic() - started < args.timeout:
        finished = {"_id": {"$in": list(due)}, "state": {"$in": ["sent", "skipped"]}}
        done = db.followup_deliveries.count_documents(finished)
        if done == len(due):
            break
        time.sleep(1)
    outbox = clients.outbox(stack.control_url("whatsapp"))
    stop.set()
    for thread in threads:
        thread.join()
    accepted = {m["biz_opaque_callback_data"]: m for m in outbox}
    late = sorted(
        (datetime.fromisoformat(accepted[e]["received_at"].replace("Z", "+00:00")) - at).total_seconds()
        for e, at in due.items()
        if e in accepted
    )
    return {
        "design": design,
        "sent": len(late),
        "expired_or_unsent": len(due) - len(late),
        "p50": statistics.median(late) if late else float("nan"),
        "p95": late[min(len(late) - 1, round(0.95 * (len(late) - 1)))] if late else float("nan"),
        "max": late[-1] if late else float("nan"),
        "nudges_sent": sum(1 for e in accepted if e.startswith("nudge-")),
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nudges", type=int, default=5000)
    parser.add_argument("--reminders", type=int, default=40)
    parser.add_argument("--spread", type=float, default=60.0, help="reminders fall due over this many seconds")
    parser.add_argument("--handover", type=float, default=2.0, help="seconds between a run's receive and the next")
    parser.add_argument("--mode", choices=["both", "separate", "shared"], default="both")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)
    designs = ["separate", "shared"] if args.mode == "both" else [args.mode]
    with (
        tempfile.TemporaryDirectory(prefix="bench-reminders-") as tmp,
        running_stack(Path(tmp) / "stack", mongo_standalone=True) as stack,
    ):
        clients.set_settings(stack.control_url("openai"), latency=OPENAI_LATENCY_S)
        print(
            f"{args.nudges} nudges queued at once, {args.reminders} reminders due over the first "
            f"{args.spread:.0f} s; OpenAI {OPENAI_LATENCY_S * 1000:.0f} ms, WhatsApp "
            f"{WHATSAPP_LATENCY_S * 1000:.0f} ms per call; {args.handover:.0f} s hand-over per run"
        )
        for design in designs:
            r = run_design(stack, design, args)
            print(
                f"{r['design']:>8}: reminders late p50 {r['p50']:.1f} s, p95 {r['p95']:.1f} s, "
                f"max {r['max']:.1f} s ({r['sent']} sent, {r['expired_or_unsent']} not); "
                f"{r['nudges_sent']} nudges sent by then; {r['seconds']:.0f} s"
            )


if __name__ == "__main__":
    main()
