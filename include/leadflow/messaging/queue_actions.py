"""What the processor does to an SQS message once its outcome is known: delete, dead-letter, leave.

The caller records the outcome in the ledger first; these only move the message. Deletes go
out in batches of 10 (``DeleteMessageBatch``, a tenth of the SQS calls): a crash before a batch
is flushed only means redeliveries, which the ledger absorbs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from leadflow.messaging.batch_store import SYSTEM_ATTRIBUTES

log = logging.getLogger(__name__)

MAX_REDELIVERY_DELAY_S = 900
SQS_BATCH = 10  # the most SQS accepts in one batch call
MAX_MESSAGE_ATTRIBUTES = 10  # SQS refuses a message with more
# What a DLQ copy says about why it is there; a redrive drops these and keeps the rest.
DLQ_ATTRIBUTES = frozenset({"reason", "reason_code", "source_message_id", "event_id", "redriven_from"})


def carried_attributes(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's own attributes (a webhook's ``signature``, ...) in SendMessage's shape, minus
    the DLQ bookkeeping ones, so a dead-lettered copy can be redriven as it first arrived."""
    carried: dict[str, dict[str, Any]] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        if name in DLQ_ATTRIBUTES or not isinstance(value, dict):
            continue
        kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if value.get(k) is not None}
        if "DataType" in kept and len(kept) == 2:
            carried[name] = kept
    return carried


def receive_count(message: dict[str, Any]) -> int:
    return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1) or 1)


class QueueActions:
    """Thread-safe actions on the messages of one batch (main queue + its DLQ)."""

    def __init__(self, sqs: Any, *, queue_url: str, dlq_url: str, redelivery_delay_seconds: int = 60) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.redelivery_delay_seconds = redelivery_delay_seconds
        self._delete_lock = threading.Lock()
        self._pending_deletes: list[dict[str, Any]] = []

    def receive(self, visibility_timeout: int, wait_seconds: int = 1) -> list[dict[str, Any]]:
        """Up to 10 more messages, asked for as the sensor asks (its attributes and visibility
        timeout). A short long-poll: SQS answers as soon as it has any message, and an empty
        answer ends the caller's receiving (short polling may miss messages on other hosts)."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=SQS_BATCH,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
        )
        return list(response.get("Messages") or [])

    def dead_letter(self, message: dict[str, Any], reason: str, detail: str, *, event_id: str | None) -> str:
        """Copy the original body to the DLQ with the reason attributes; return the DLQ message id.

        The caller deletes the original (:meth:`delete`) once it has recorded the DLQ id. The
        original's own attributes go along (a webhook is only trusted with its ``signature``).
        """
        reasons = {
            "reason": {"DataType": "String", "StringValue": detail[:1000]},
            "reason_code": {"DataType": "String", "StringValue": reason[:200]},
            "source_message_id": {"DataType": "String", "StringValue": str(message.get("MessageId"))},
        }
        if event_id:
            reasons["event_id"] = {"DataType": "String", "StringValue": event_id}
        own = list(carried_attributes(message).items())[: MAX_MESSAGE_ATTRIBUTES - len(reasons)]
        attributes = {**dict(own), **reasons}
        response = self.sqs.send_message(
            QueueUrl=self.dlq_url, MessageBody=message.get("Body") or "(empty)", MessageAttributes=attributes
        )
        log.warning("SQS message %s (event %s) dead-lettered: %s", message.get("MessageId"), event_id, reason)
        return str(response["MessageId"])

    def delete(self, message: dict[str, Any]) -> None:
        """Delete the message from the queue (its outcome is already in the ledger)."""
        with self._delete_lock:
            self._pending_deletes.append(message)
            if len(self._pending_deletes) < SQS_BATCH:
                return
            batch, self._pending_deletes = self._pending_deletes, []
        self._delete_batch(batch)

    def flush(self) -> None:
        with self._delete_lock:
            batch, self._pending_deletes = self._pending_deletes, []
        for start in range(0, len(batch), SQS_BATCH):
            self._delete_batch(batch[start : start + SQS_BATCH])

    def _delete_batch(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
        try:
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception:  # redelivery is harmless: the ledger has the outcome
            log.warning("Could not delete %d SQS message(s); the ledger absorbs their redelivery", len(batch),
                        exc_info=True)  # fmt: skip
            return
        for failure in response.get("Failed") or []:
            log.warning("Could not delete SQS message %s (%s); the ledger absorbs its redelivery",
                        batch[int(failure["Id"])].get("MessageId"), failure.get("Code"))  # fmt: skip

    def leave(self, message: dict[str, Any], delay: int | None = None) -> None:
        """Leave the message in the queue, visible again after ``delay`` (backoff by receive count)."""
        if delay is None:
            delay = min(MAX_REDELIVERY_DELAY_S, self.redelivery_delay_seconds * 2 ** (receive_count(message) - 1))
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=int(delay)
            )
        except Exception:  # it comes back when the receive's visibility timeout ends
            log.warning("Could not change the visibility of SQS message %s", message.get("MessageId"), exc_info=True)
