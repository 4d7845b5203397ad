"""Meta's ``messages`` webhook as it arrives on SQS: check the signature, pull out the receipts.

The SQS message body is the webhook's raw JSON exactly as Meta POSTed it, and the message
attribute ``signature`` is its ``X-Hub-Signature-256`` header: ``sha256=`` + the hex HMAC-SHA256
of the body with the Meta app secret. What matters here: ``entry[].changes[].value.statuses[]``
(with each status's ``pricing``: what Meta bills the message as) and the changes of field
``template_category_update`` (Meta re-categorised, or is about to re-categorise, a template).
Inbound chat (``value.messages[]``) and anything else in the webhook are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leadflow.statuses.dag_settings import SIGNATURE_ATTRIBUTE

Status = Literal["sent", "delivered", "read", "failed"]


class InvalidWebhook(ValueError):
    """The message is not a webhook we can trust or read; ``reason`` goes on the DLQ copy."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# What API Gateway puts in the attribute when the POST had no header (SQS refuses empty values).
ABSENT_SIGNATURE = "absent"


def signature_of(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(message: dict[str, Any], app_secret: str) -> None:
    """Raise :class:`InvalidWebhook` unless the ``signature`` attribute signs the body."""
    attribute = (message.get("MessageAttributes") or {}).get(SIGNATURE_ATTRIBUTE) or {}
    given = attribute.get("StringValue")
    if not given or given == ABSENT_SIGNATURE:
        raise InvalidWebhook("missing_signature", "no 'signature' message attribute (X-Hub-Signature-256)")
    expected = signature_of((message.get("Body") or "").encode("utf-8"), app_secret)
    if not hmac.compare_digest(given.strip().lower(), expected):
        raise InvalidWebhook("bad_signature", "the 'signature' attribute does not match the body and app secret")


class _Error(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: int
    title: str | None = None


class _Pricing(BaseModel):
    """Meta's ``pricing`` of a status (per-message pricing: ``pricing_model`` PMP; ``billable`` is
    deprecated by Meta but still sent, and kept)."""

    model_config = ConfigDict(extra="ignore")
    category: str | None = None
    type: str | None = None
    pricing_model: str | None = None
    billable: bool | None = None


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    status: str
    timestamp: int
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[_Error] = Field(default_factory=list)
    pricing: _Pricing | None = None


class _CategoryUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message_template_id: int | str
    message_template_name: str
    message_template_language: str | None = None
    previous_category: str | None = None  # a completed change
    new_category: str
    correct_category: str | None = None  # an impending change (with its date)
    category_update_timestamp: int | None = None


@dataclass(frozen=True)
class TemplateCategoryUpdate:
    """Meta's ``template_category_update``: ``previous`` → ``new`` done, or ``new`` → ``correct``
    announced for ``effective_at`` (then ``impending``)."""

    template_id: str
    name: str
    language: str | None
    previous_category: str | None
    new_category: str
    correct_category: str | None
    effective_at: datetime | None
    notified_at: datetime | None

    @property
    def impending(self) -> bool:
        return self.correct_category is not None

    @property
    def category_now_or_soon(self) -> str:
        """The category the template's messages are (or will be) billed and limited as."""
        return self.correct_category or self.new_category

    def as_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "name": self.name,
            "language": self.language,
            "previous_category": self.previous_category,
            "new_category": self.new_category,
            "correct_category": self.correct_category,
            "effective_at": self.effective_at,
            "notified_at": self.notified_at,
        }


@dataclass(frozen=True)
class Receipt:
    """One status change of one sent message."""

    wamid: str
    status: Status
    at: datetime
    recipient_id: str | None
    callback_data: str | None
    error_code: int | None = None
    error_title: str | None = None
    pricing: dict[str, Any] | None = None  # {"category", "type", "pricing_model", "billable"}


@dataclass(frozen=True)
class ParsedWebhook:
    receipts: list[Receipt]
    ignored: int  # inbound messages, unknown status kinds (e.g. "deleted", "played")
    template_updates: list[TemplateCategoryUpdate] = field(default_factory=list)


def _stamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and not isinstance(value, bool) else None


def _category_update(raw: Any, entry: dict[str, Any]) -> TemplateCategoryUpdate:
    update = _CategoryUpdate.model_validate(raw)
    return TemplateCategoryUpdate(
        template_id=str(update.message_template_id),
        name=update.message_template_name,
        language=update.message_template_language,
        previous_category=update.previous_category,
        new_category=update.new_category,
        correct_category=update.correct_category,
        effective_at=_stamp(update.category_update_timestamp),
        notified_at=_stamp(entry.get("time")),
    )


def parse_webhook(body: str) -> ParsedWebhook:
    try:
        data = json.loads(body)
    except (TypeError, json.JSONDecodeError):
        raise InvalidWebhook("invalid_json", "the body is not JSON") from None
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        raise InvalidWebhook("not_whatsapp", "the body is not a whatsapp_business_account webhook")
    receipts: list[Receipt] = []
    updates: list[TemplateCategoryUpdate] = []
    ignored = 0
    try:
        for entry in data.get("entry") or []:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                if change.get("field") == "template_category_update":
                    updates.append(_category_update(value, entry))
                    continue
                ignored += len(value.get("messages") or [])
                for raw in value.get("statuses") or []:
                    status = _Status.model_validate(raw)
                    if status.status not in ("sent", "delivered", "read", "failed"):
                        ignored += 1
                        continue
                    error = status.errors[0] if status.errors else None
                    receipts.append(
                        Receipt(
                            wamid=status.id,
                            status=status.status,  # type: ignore[arg-type]
                            at=datetime.fromtimestamp(status.timestamp, UTC),
                            recipient_id=status.recipient_id,
                            callback_data=status.biz_opaque_callback_data or None,
                            error_code=error.code if error else None,
                            error_title=error.title if error else None,
                            pricing=status.pricing.model_dump() if status.pricing else None,
                        )
                    )
    except (AttributeError, TypeError, ValidationError) as exc:
        raise InvalidWebhook("invalid_webhook", f"unexpected webhook shape: {type(exc).__name__}") from None
    return ParsedWebhook(receipts, ignored, updates)
