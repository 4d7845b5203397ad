"""Benchmark of the receipts path: webhooks per second into the ledger, with Meta's disorder.

    python -m bench.statuses [--events 1000] [--resend-share 0.02]

Starts its own stand-in stack, seeds ``--events`` sent follow-ups in ``followup_deliveries`` and
puts Meta-shaped, signed ``statuses`` webhooks for them on the statuses queue: sent, delivered,
read for each, every receipt twice (Meta retries webhooks) and half of the events newest first;
``--resend-share`` of the events get a ``failed`` 131047 instead (one template resend each, through
the WhatsApp stand-in at 100 ms). Then ``StatusesProcessor.process`` (what ``apply_receipts`` runs)
applies the whole backlog and the benchmark checks the outcome: every event ``read`` (or resent
exactly once), no message deleted before it was applied.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pymongo

from devstack import clients
from devstack.services import WHATSAPP_APP_SECRET, running_stack
from devstack.whatsapp_receipts import encode, sign, status_entry, webhook_body

PHONE_NUMBER_ID = "100000000000001"
TEMPLATE = "inquiry_followup_v1"


def webhooks(events: int, resend_share: float, rng: random.Random) -> tuple[list[bytes], int]:
    bodies: list[bytes] = []
    resends = 0
    now = int(time.time())
    for i in range(events):
        wamid, event_id, to = f"wamid.bench-{i}", f"evt-{i:06d}", f"9198{i:08d}"
        if rng.random() < resend_share:
            statuses = [status_entry(wamid, "failed", now, to, event_id, 131047)] * 2
            resends += 1
        else:
            statuses = [
                status_entry(wamid, s, now + n, to, event_id) for n, s in enumerate(("sent", "delivered", "read"))
            ]
            statuses = [s for s in statuses for _ in range(2)]
            if i % 2:
                statuses.reverse()
        bodies += [encode(webhook_body([s], PHONE_NUMBER_ID)) for s in statuses]
    return bodies, resends


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--resend-share", type=float, default=0.02)
    args = parser.parse_args(argv)
    rng = random.Random(8)

    from leadflow.messaging.queue_actions import QueueActions
    from leadflow.messaging.templates import TemplateConfig
    from leadflow.messaging.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
    from leadflow.statuses.delivery import DeliveryLedger
    from leadflow.statuses.processor import StatusesProcessor
    from leadflow.statuses.resend import Resender

    with running_stack(Path(tempfile.mkdtemp(prefix="leadflow-bench-statuses-")) / "stack") as stack:
        whatsapp_url = stack.control_url("whatsapp")
        clients.set_settings(whatsapp_url, latency=0.1, receipts=False)
        db = pymongo.MongoClient(stack.mongo_uri, tz_aware=True).leadflow
        db.followup_deliveries.insert_many([
            {"_id": f"evt-{i:06d}", "state": "sent", "wamid": f"wamid.bench-{i}", "send_mode": "text",
             "event_type": "inquiry_followup", "text": f"Hello buyer {i}"}
            for i in range(args.events)
        ])  # fmt: skip
        sqs = stack.boto3_client("sqs")
        bodies, resends = webhooks(args.events, args.resend_share, rng)
        mark = time.perf_counter()
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(n), "MessageBody": body.decode(), "MessageAttributes": {
                    "signature": {"DataType": "String", "StringValue": sign(body, WHATSAPP_APP_SECRET)}}}
                for n, body in enumerate(bodies[start : start + 10])
            ]  # fmt: skip
            sqs.send_message_batch(QueueUrl=stack.statuses_queue_url, Entries=entries)
        print(f"posted {len(bodies)} signed webhooks in {time.perf_counter() - mark:.1f} s", flush=True)
        mark = time.perf_counter()
        messages: list[dict[str, Any]] = []
        while batch := sqs.receive_message(
            QueueUrl=stack.statuses_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=600,
            MessageAttributeNames=["signature"], MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", []):  # fmt: skip
            messages += batch
        print(f"received them in {time.perf_counter() - mark:.1f} s", flush=True)

        ledger = DeliveryLedger(db.followup_deliveries)
        whatsapp = WhatsAppClient(
            WhatsAppConfig(stack.whatsapp_url, "bench-token", PHONE_NUMBER_ID), retry=RetryPolicy(attempts=1)
        )
        templates = TemplateConfig.parse({"templates": {"inquiry_followup": TEMPLATE}})
        processor = StatusesProcessor(
            ledger=ledger,
            queue=QueueActions(sqs, queue_url=stack.statuses_queue_url, dlq_url=stack.statuses_dlq_url),
            resender=Resender(ledger, whatsapp, templates),
            app_secret=WHATSAPP_APP_SECRET,
            budget_seconds=3600,
        )
        started = time.perf_counter()
        summary = processor.process(messages)
        seconds = time.perf_counter() - started

        docs = list(db.followup_deliveries.find())
        read = sum((d.get("delivery") or {}).get("status") == "read" for d in docs)
        resent = sum((d.get("resend") or {}).get("outcome") == "sent" for d in docs)
        sends = len(clients.outbox(whatsapp_url))
        left = sqs.get_queue_attributes(
            QueueUrl=stack.statuses_queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
        print(f"{len(messages)} webhooks ({summary.receipts} receipts, every one twice, half reversed) for "
              f"{args.events} events in {seconds:.2f} s = {len(messages) / seconds:.0f} webhooks/s")  # fmt: skip
        print(f"delivery read: {read}/{args.events - resends}; 131047 resends: {resent}/{resends} "
              f"(template sends {sends}: duplicates {sends - resends}); stale receipts ignored: "
              f"{summary.applied.get('stale', 0)}; webhooks not deleted: {left}")  # fmt: skip
        if read != args.events - resends or resent != resends or sends != resends:
            raise SystemExit("the receipts did not all land as expected")


if __name__ == "__main__":
    main()
