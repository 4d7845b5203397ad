"""Move dead-lettered messages back to their main queue, filtered by their ``reason_code``.

Three queue pairs: the follow-ups (``leadflow-followups-dlq`` → ``leadflow-followups``), the
site-visit reminders (``leadflow-reminders-dlq`` → ``leadflow-reminders``) and the receipts
(``leadflow-whatsapp-statuses-dlq`` → ``leadflow-whatsapp-statuses``, e.g. webhooks refused as
``bad_signature`` while the connection still held a rotated app secret). A message goes back
with the attributes it first arrived with (a webhook's ``signature``), minus the DLQ's.

SQS's own redrive (``StartMessageMoveTask``) moves everything or nothing; after fixing one cause
(a user's phone number, the OpenAI quota) the data team wants to move just those. Each DLQ
message carries the ``reason_code`` attribute the processor set (``invalid_phone``,
``send_failed_131026``, ...); a message SQS moved after too many receives has none and counts
as ``no_reason``. ``reasons`` entries may be shell-style patterns (``send_failed_*``).

A moved message is sent to the main queue *before* it is deleted from the DLQ, so a crash in
between leaves two copies, never none; the ledger makes the extra copy harmless (a ``sent``
event is never resent, every other state is evaluated again: see :mod:`.ledger`). Messages that
do not match (and, in a dry run, every message) are made visible again at the end.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from leadflow.messaging.queue_actions import carried_attributes

log = logging.getLogger(__name__)

NO_REASON = "no_reason"
SCAN_VISIBILITY_S = 300  # long enough that the scan never sees a message twice
MAX_LISTED_IDS = 50


@dataclass
class RedriveSummary:
    dry_run: bool
    examined: int = 0
    moved: int = 0
    kept: int = 0
    moved_by_reason: Counter[str] = field(default_factory=Counter)
    kept_by_reason: Counter[str] = field(default_factory=Counter)
    moved_event_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "moved": self.moved,  # in a dry run: would be moved
            "kept": self.kept,
            "moved_by_reason": dict(self.moved_by_reason),
            "kept_by_reason": dict(self.kept_by_reason),
            "moved_event_ids": self.moved_event_ids[:MAX_LISTED_IDS],
        }


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = (message.get("MessageAttributes") or {}).get(name) or {}
    return value.get("StringValue")


def matches(reason: str, reasons: list[str]) -> bool:
    return not reasons or any(fnmatch.fnmatchcase(reason, pattern) for pattern in reasons)


def redrive(
    sqs: Any, *, dlq_url: str, queue_url: str, reasons: list[str], max_messages: int, dry_run: bool
) -> RedriveSummary:
    """Move up to ``max_messages`` matching DLQ messages to ``queue_url``; return what happened."""
    summary = RedriveSummary(dry_run=dry_run)
    seen: set[str] = set()
    to_release: list[dict[str, Any]] = []
    try:
        while summary.moved < max_messages:
            batch = (
                sqs.receive_message(
                    QueueUrl=dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=SCAN_VISIBILITY_S,
                    MessageAttributeNames=["All"],
                ).get("Messages")
                or []
            )
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                to_release.extend(batch)
                break
            for message in fresh:
                seen.add(message["MessageId"])
                summary.examined += 1
                reason = _attribute(message, "reason_code") or NO_REASON
                if summary.moved >= max_messages or not matches(reason, reasons):
                    summary.kept += 1
                    summary.kept_by_reason[reason] += 1
                    to_release.append(message)
                    continue
                event_id = _attribute(message, "event_id")
                if dry_run:
                    to_release.append(message)
                else:
                    attributes = {
                        **carried_attributes(message),
                        "redriven_from": {"DataType": "String", "StringValue": reason[:200]},
                    }
                    sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"], MessageAttributes=attributes)
                    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                summary.moved += 1
                summary.moved_by_reason[reason] += 1
                if event_id:
                    summary.moved_event_ids.append(event_id)
    finally:
        for message in to_release:
            try:
                sqs.change_message_visibility(
                    QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            except Exception:  # it comes back by itself when SCAN_VISIBILITY_S ends
                log.warning("Could not release DLQ message %s", message.get("MessageId"), exc_info=True)
    verb = "would move" if dry_run else "moved"
    log.info("Redrive %s %d of %d examined DLQ message(s): %s", verb, summary.moved, summary.examined,
             dict(summary.moved_by_reason))  # fmt: skip
    return summary


def queue_variables(queue: str) -> tuple[str, str]:
    """(main queue Variable, DLQ Variable) of the ``queue`` param: ``followups``, ``reminders`` or ``statuses``."""
    from leadflow.config import (
        VAR_DLQ_URL,
        VAR_QUEUE_URL,
        VAR_REMINDERS_DLQ_URL,
        VAR_REMINDERS_QUEUE_URL,
        VAR_STATUSES_DLQ_URL,
        VAR_STATUSES_QUEUE_URL,
    )

    pairs = {
        "followups": (VAR_QUEUE_URL, VAR_DLQ_URL),
        "reminders": (VAR_REMINDERS_QUEUE_URL, VAR_REMINDERS_DLQ_URL),
        "statuses": (VAR_STATUSES_QUEUE_URL, VAR_STATUSES_DLQ_URL),
    }
    if queue not in pairs:
        raise ValueError(f"queue must be one of {sorted(pairs)}, not {queue!r}")
    return pairs[queue]


def redrive_from_airflow(
    reasons: list[str] | None, max_messages: int, dry_run: bool, queue: str = "followups"
) -> dict[str, Any]:
    """The ``followups_redrive`` task body: queue URLs from the Variables, SQS through the amazon hook."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Variable

    from leadflow.config import AWS_CONN_ID

    main_variable, dlq_variable = queue_variables(queue)
    patterns = [str(r).strip() for r in (reasons or []) if str(r).strip()]
    summary = redrive(
        SqsHook(aws_conn_id=AWS_CONN_ID).conn,
        dlq_url=Variable.get(dlq_variable),
        queue_url=Variable.get(main_variable),
        reasons=patterns,
        max_messages=max(1, int(max_messages)),
        dry_run=bool(dry_run),
    )
    return {"queue": queue, **summary.as_dict()}
