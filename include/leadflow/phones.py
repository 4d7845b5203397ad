"""Mobile numbers: as typed by buyers, normalised to E.164, and masked for logs."""

from __future__ import annotations

import phonenumbers

from leadflow.config import DEFAULT_PHONE_REGION


def to_e164(raw: object, region: str = DEFAULT_PHONE_REGION) -> str | None:
    """``+919876543210`` for a valid number in any format people type; ``None`` otherwise."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    text = str(raw).strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(phone: object) -> str:
    """Keep only the last four digits, so a log line can still be matched to a ticket."""
    digits = "".join(ch for ch in str(phone or "") if ch.isdigit())
    return f"***{digits[-4:]}" if len(digits) >= 4 else "***"
