"""The follow-up message contract: what a producer puts on the SQS queue.

A body is either the payload itself or an EventBridge envelope carrying it in ``detail`` (the
envelope's ``id`` is the fallback ``event_id``)::

    {"event_id": "evt-1", "event_type": "site_visit_reminder", "user_id": "<24 hex>",
     "scheduled_at": "2026-11-21T11:00:00+05:30", "due_at": "2026-11-21T05:15:00Z",
     "media": {"type": "image", "url": "https://...", "caption": "..."}}

:func:`parse_body` returns a :class:`FollowupEvent` or raises :class:`ValidationFailure`, whose
``detail`` names the offending fields without echoing their values (a bad value can be a phone
number or a URL with a token in it, and the reason ends up in logs and in a DLQ attribute).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_EVENT_ID_LENGTH = 200
MAX_MEDIA_URL_LENGTH = 2000
MAX_CAPTION_LENGTH = 900


class EventType(StrEnum):
    SITE_VISIT_REMINDER = "site_visit_reminder"
    COST_SHEET_FOLLOWUP = "cost_sheet_followup"
    INQUIRY_FOLLOWUP = "inquiry_followup"


class ValidationFailure(Exception):
    """A message that does not meet the contract; ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id

    @property
    def text(self) -> str:
        return f"{self.reason}: {self.detail}"


class Media(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["image", "video", "document"]
    url: str = Field(min_length=1, max_length=MAX_MEDIA_URL_LENGTH)
    caption: str | None = Field(default=None, max_length=MAX_CAPTION_LENGTH)

    @field_validator("url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("https://", "http://")) or any(ch.isspace() for ch in value):
            raise ValueError("must be an http(s) URL")
        return value


class FollowupEvent(BaseModel):
    """One validated follow-up request."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    event_id: str = Field(min_length=1, max_length=MAX_EVENT_ID_LENGTH)
    event_type: EventType
    user_id: str
    scheduled_at: datetime | None = None
    # When a time-critical event should reach the buyer (the planner's due time); optional, see
    # :func:`leadflow.followups.deadlines.deadline_of` for the default.
    due_at: datetime | None = None
    media: Media | None = None

    @field_validator("user_id")
    @classmethod
    def _object_id(cls, value: str) -> str:
        if not ObjectId.is_valid(value) or len(value) != 24:
            raise ValueError("must be a 24-character hex ObjectId")
        return value.lower()

    @field_validator("scheduled_at", "due_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("must carry a UTC offset (e.g. +05:30 or Z)")
        return value

    @model_validator(mode="after")
    def _reminder_needs_time(self) -> FollowupEvent:
        if self.event_type is EventType.SITE_VISIT_REMINDER and self.scheduled_at is None:
            raise ValueError("scheduled_at is required for site_visit_reminder")
        return self

    @property
    def user_object_id(self) -> ObjectId:
        return ObjectId(self.user_id)


def unwrap(body: Any) -> dict[str, Any]:
    """The payload of a raw body or of an EventBridge envelope (``detail``, ``id`` as fallback)."""
    if not isinstance(body, dict):
        raise ValidationFailure("invalid_contract", "the body is not a JSON object")
    detail = body.get("detail")
    if isinstance(detail, dict) and ("detail-type" in body or "source" in body):
        payload = dict(detail)
        if not payload.get("event_id") and isinstance(body.get("id"), str):
            payload["event_id"] = body["id"]
        return payload
    return body


def _event_id_of(payload: dict[str, Any]) -> str | None:
    value = payload.get("event_id")
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_EVENT_ID_LENGTH:
        return value.strip()
    return None


def _describe(error: ValidationError) -> str:
    """Field paths and messages, never the input values."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)[:500]


def parse_payload(payload: dict[str, Any]) -> FollowupEvent:
    try:
        return FollowupEvent.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailure("invalid_contract", _describe(exc), _event_id_of(payload)) from None


def parse_body(body: str | bytes | None) -> FollowupEvent:
    """Parse an SQS message body; raise :class:`ValidationFailure` with a human reason."""
    if body is None or not str(body).strip():
        raise ValidationFailure("invalid_json", "empty body")
    try:
        decoded = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValidationFailure("invalid_json", f"not JSON ({exc.msg} at position {exc.pos})") from None
    except UnicodeDecodeError:
        raise ValidationFailure("invalid_json", "not UTF-8 text") from None
    return parse_payload(unwrap(decoded))
