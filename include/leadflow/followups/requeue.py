"""Hand a message back as a fresh copy, for a wait the processor chose: the account, not the
message, is the problem; or a send's outcome is unknown and its grace period must pass first.

SQS counts every receive of a message and moves it to the DLQ after ``maxReceiveCount`` (5)
of them. While an account-level WhatsApp error (token, payment, permissions, block) lasts,
every run receives messages it cannot send: left in the queue with a visibility change, the
whole backlog would reach the DLQ after 5 receives x 15 min, as ``no_reason``, although
nothing is wrong with it. A fresh copy (``SendMessage`` with ``DelaySeconds``, then the
original deleted) starts its receive count, and its retention period, again, so an outage
of any length ends with the backlog still queued, and it goes out once the cause is fixed.
The same holds for an event waiting out its unknown-outcome grace period: a message that had
already spent receives (outage backoffs, a worker lost twice) would otherwise reach the DLQ
before its one resend (``make chaos`` seed 5 lost 58 follow-ups that way).

(SQS moves a message to the DLQ once its receive count exceeds the source queue's
``maxReceiveCount``; ``DelaySeconds`` allows 0-900 s: AWS, *Using dead-letter queues in Amazon
SQS* and ``SendMessage``.) Send first, delete second: a crash in between leaves two copies,
which the ledger (same event id) sends at most once.
"""

from __future__ import annotations

import logging
from typing import Any

from leadflow.messaging.queue_actions import MAX_MESSAGE_ATTRIBUTES, MAX_REDELIVERY_DELAY_S, carried_attributes

log = logging.getLogger(__name__)

REQUEUED_ATTRIBUTE = "requeued_after"  # why: the account-level error code, or unknown_outcome


def requeue_copy(sqs: Any, queue_url: str, message: dict[str, Any], *, delay_seconds: int, because: str) -> bool:
    """Send a copy of ``message`` visible after ``delay_seconds``; False if SQS refused it (the
    caller then leaves the original instead, and must not delete it)."""
    body = message.get("Body")
    if not body:
        return False  # SQS refuses an empty body; such a message cannot be sent to anyone anyway
    own = {k: v for k, v in carried_attributes(message).items() if k != REQUEUED_ATTRIBUTE}
    attributes = dict(list(own.items())[: MAX_MESSAGE_ATTRIBUTES - 1])
    attributes[REQUEUED_ATTRIBUTE] = {"DataType": "String", "StringValue": because[:200]}
    try:
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            DelaySeconds=max(0, min(int(delay_seconds), MAX_REDELIVERY_DELAY_S)),
            MessageAttributes=attributes,
        )
    except Exception:  # the original stays; it comes back after its visibility timeout
        log.warning("Could not re-queue SQS message %s", message.get("MessageId"), exc_info=True)
        return False
    return True
