"""One batch of webhook messages from ``leadflow-whatsapp-statuses`` into the ledger.

Per SQS message: verify the signature (bad or missing → the statuses DLQ with the reason),
parse (unreadable → DLQ), apply each receipt (:mod:`leadflow.statuses.delivery`), resend after a
131047 (:mod:`leadflow.statuses.resend`), and only then delete the message. A message whose
receipts could not all be applied (MongoDB trouble, a throttled or account-blocked resend) stays
in the queue and comes back; applying a receipt twice changes nothing, so redelivery is safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from leadflow.messaging.queue_actions import QueueActions
from leadflow.statuses.delivery import Applied, DeliveryLedger
from leadflow.statuses.meta_events import MetaEvents
from leadflow.statuses.resend import Resender, ResendResult
from leadflow.statuses.webhook import InvalidWebhook, parse_webhook, verify_signature

log = logging.getLogger(__name__)

MAX_PROBLEM_IDS = 50


@dataclass
class StatusesSummary:
    received: int = 0  # SQS messages (webhooks)
    receipts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)  # see delivery.Applied
    ignored: int = 0  # inbound chat messages and unknown status kinds
    failed: int = 0  # events newly failed by a receipt (or a failed resend)
    failure_codes: Counter[str] = field(default_factory=Counter)
    resends: Counter[str] = field(default_factory=Counter)  # see resend.ResendResult
    dead_lettered: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    deleted: int = 0
    left_for_redelivery: int = 0
    errors: int = 0
    problem_event_ids: list[str] = field(default_factory=list)
    fatal_error: str | None = None
    elapsed_seconds: float = 0.0

    @property
    def needs_alert(self) -> bool:
        return bool(
            self.failed or self.dead_lettered or self.resends[ResendResult.FAILED] or self.resends[ResendResult.UNKNOWN]
        )

    def problem(self, event_id: str | None) -> None:
        if event_id and len(self.problem_event_ids) < MAX_PROBLEM_IDS and event_id not in self.problem_event_ids:
            self.problem_event_ids.append(event_id)

    def as_dict(self) -> dict[str, Any]:
        """Counts and ids only (XCom and the alert)."""
        return {
            "received": self.received,
            "receipts": self.receipts,
            "statuses": dict(self.statuses),
            "applied": dict(self.applied),
            "ignored": self.ignored,
            "failed": self.failed,
            "failure_codes": dict(self.failure_codes),
            "resends": dict(self.resends),
            "dead_lettered": self.dead_lettered,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "deleted": self.deleted,
            "left_for_redelivery": self.left_for_redelivery,
            "errors": self.errors,
            "problem_event_ids": list(self.problem_event_ids),
            "fatal_error": self.fatal_error,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class _Leave(Exception):
    """The message must come back later (a throttled or blocked resend)."""


class StatusesProcessor:
    def __init__(
        self,
        *,
        ledger: DeliveryLedger,
        queue: QueueActions,
        resender: Resender,
        app_secret: str,
        budget_seconds: float = 240.0,
        meta: MetaEvents | None = None,
    ) -> None:
        self.meta = meta  # pricing, marketing refusals, template categories (statuses.meta_events)
        self.ledger = ledger
        self.queue = queue
        self.resender = resender
        self.app_secret = app_secret
        self.budget_seconds = budget_seconds
        self._abort_resends = threading.Event()

    def process(self, messages: list[dict[str, Any]]) -> StatusesSummary:
        summary = StatusesSummary(received=len(messages))
        started = time.monotonic()
        self.ledger.ensure_indexes()
        try:
            for message in messages:
                over_budget = time.monotonic() - started > self.budget_seconds
                self._one(message, summary, over_budget=over_budget)
        finally:
            self.queue.flush()
        summary.elapsed_seconds = time.monotonic() - started
        return summary

    def _one(self, message: dict[str, Any], summary: StatusesSummary, *, over_budget: bool) -> None:
        try:
            verify_signature(message, self.app_secret)
            parsed = parse_webhook(message.get("Body") or "")
        except InvalidWebhook as invalid:
            self._dead_letter(message, invalid, summary)
            return
        summary.ignored += parsed.ignored
        for update in parsed.template_updates if self.meta is not None else []:
            self.meta.on_template_update(update)
        try:
            for receipt in parsed.receipts:
                summary.receipts += 1
                summary.statuses[receipt.status] += 1
                self._apply(receipt, summary, over_budget=over_budget)
        except _Leave:
            self.queue.leave(message)
            summary.left_for_redelivery += 1
            return
        except Exception:  # left for redelivery; the task fails once at the end
            log.exception(
                "Receipts of SQS message %s could not be applied; left for redelivery", message.get("MessageId")
            )
            summary.errors += 1
            self.queue.leave(message)
            summary.left_for_redelivery += 1
            return
        self.queue.delete(message)
        summary.deleted += 1

    def _apply(self, receipt: Any, summary: StatusesSummary, *, over_budget: bool) -> None:
        doc = self.ledger.find(receipt)
        if doc is None:
            # Sent by something else on this number, or by a sender that sets no callback data.
            summary.applied[Applied.UNMATCHED] += 1
            return
        applied = self.ledger.apply(doc, receipt)
        if self.meta is not None:
            self.meta.on_receipt(doc, receipt, applied)
        if applied is Applied.RESEND:
            if over_budget or self._abort_resends.is_set():
                # Keep the 131047 for the next run; the receipt applied so far is idempotent.
                self.ledger.undo_failed(doc, receipt)
                raise _Leave
            attempt = self.resender.resend(doc, receipt)
            summary.resends[attempt.result] += 1
            if attempt.result in (ResendResult.RETRY_LATER, ResendResult.ACCOUNT_ERROR):
                self.ledger.undo_failed(doc, receipt)
                if attempt.result is ResendResult.ACCOUNT_ERROR:
                    self._abort_resends.set()
                    summary.fatal_error = (
                        summary.fatal_error or f"WhatsApp account-level error {attempt.code} on a resend"
                    )
                raise _Leave
            if attempt.result in (ResendResult.FAILED, ResendResult.UNKNOWN):
                summary.problem(str(doc["_id"]))
            if attempt.result is ResendResult.FAILED:
                summary.failed += 1
                summary.failure_codes[f"resend_{attempt.code}"] += 1
            summary.applied[Applied.RESEND] += 1
            return
        summary.applied[applied] += 1
        if applied is Applied.FAILED:
            summary.failed += 1
            summary.failure_codes[str(receipt.error_code)] += 1
            summary.problem(str(doc["_id"]))

    def _dead_letter(self, message: dict[str, Any], invalid: InvalidWebhook, summary: StatusesSummary) -> None:
        self.queue.dead_letter(message, invalid.reason, invalid.detail, event_id=None)
        self.queue.delete(message)
        summary.dead_lettered += 1
        summary.dead_letter_reasons[invalid.reason] += 1
