"""The one template resend after an asynchronous 131047 (the 24-hour window had closed).

The follow-ups chose free-form text because the buyer seemed to have written within 24 hours;
Meta accepted it (200 + wamid) and later reported ``failed`` 131047. The fix is the approved
template for the event type with the same text as its body parameter (and the same media as its
header, when the template has a media header), sent **at most once**:

1. claim ``resend`` on the event (atomic, only if absent) — a repeated receipt finds it claimed;
2. one POST, never retried here (the client runs with a single attempt): a request that may have
   reached WhatsApp (timeout, connection dropped, 5xx) is *not* repeated; ``resend.outcome`` says
   ``unknown_outcome`` and its receipts (same ``biz_opaque_callback_data``) settle it;
3. an error that proves nothing was sent releases the claim so the receipt's redelivery tries
   again: throttling (the message comes back later) and account-level errors / a missing template
   configuration, which also stop resends for the rest of the batch and fail the run once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from leadflow.messaging.templates import TemplateConfig
from leadflow.messaging.whatsapp import TemplateMediaMissing, WhatsAppClient, WhatsAppError, template_payload
from leadflow.phones import mask
from leadflow.statuses.delivery import DeliveryLedger
from leadflow.statuses.webhook import Receipt

log = logging.getLogger(__name__)


class ResendResult(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"  # claimed before: a repeated 131047 receipt
    UNKNOWN = "unknown_outcome"
    FAILED = "failed"
    RETRY_LATER = "retry_later"
    ACCOUNT_ERROR = "account_error"


@dataclass
class ResendAttempt:
    result: ResendResult
    code: str | None = None


def classify(error: WhatsAppError) -> ResendResult:
    """What a failed resend means, from what the answer proves (see leadflow.messaging.whatsapp)."""
    if error.ambiguous:
        return ResendResult.UNKNOWN  # the request may have reached WhatsApp
    if error.account_level:
        return ResendResult.ACCOUNT_ERROR
    if error.transient or error.retry_now:
        return ResendResult.RETRY_LATER  # proven not sent
    return ResendResult.FAILED


class Resender:
    def __init__(self, ledger: DeliveryLedger, whatsapp: WhatsAppClient, templates: TemplateConfig) -> None:
        self.ledger = ledger
        self.whatsapp = whatsapp
        self.templates = templates

    def resend(self, doc: dict[str, Any], receipt: Receipt) -> ResendAttempt:
        key = str(doc["_id"])
        template = self.templates.templates.get(str(doc.get("event_type")))
        if template is None:
            log.error("Event %s: 131047 but no template is configured for %s", key, doc.get("event_type"))
            return ResendAttempt(ResendResult.ACCOUNT_ERROR, "no_template")
        to = receipt.recipient_id
        if not to or not doc.get("text"):
            self.ledger.fail_event(key, receipt, reason="resend_impossible")
            return ResendAttempt(ResendResult.FAILED, "no_recipient_or_text")
        media = doc.get("media")  # the original send's, recorded by the follow-ups ledger
        media_ref = (str(media["type"]), str(media["url"])) if isinstance(media, dict) else None
        try:
            payload = template_payload(to, template, str(doc["text"]), media_ref, callback_data=key)
        except TemplateMediaMissing:
            log.error("Event %s: 131047 but template %s needs media the event has not", key, template.name)
            self.ledger.fail_event(key, receipt, reason="resend_impossible")
            return ResendAttempt(ResendResult.FAILED, "template_needs_media")
        claimed = self.ledger.claim_resend(key, receipt)
        if claimed is None:
            return ResendAttempt(ResendResult.DUPLICATE)
        replaced = claimed["resend"].get("replaced_delivery")
        try:
            wamid = self.whatsapp.send(payload)
        except WhatsAppError as error:
            result = classify(error)
            if result in (ResendResult.RETRY_LATER, ResendResult.ACCOUNT_ERROR):
                self.ledger.release_resend(key, replaced)
            elif result is ResendResult.UNKNOWN:
                self.ledger.finish_resend(key, outcome="unknown_outcome", error_code=error.code_str)
            else:
                self.ledger.finish_resend(key, outcome="failed", error_code=error.code_str)
                self.ledger.fail_event(key, receipt, reason="resend_failed")
            log.warning("Event %s: template resend to %s: %s (%s)", key, mask(to), result.value, error.code_str)
            return ResendAttempt(result, error.code_str)
        self.ledger.finish_resend(key, outcome="sent", wamid=wamid)
        log.info("Event %s: re-sent as template %s to %s after 131047 (wamid %s)", key, template.name, mask(to), wamid)
        return ResendAttempt(ResendResult.SENT)
