"""What the view may show: counts, ids and reasons; never a message, a secret or a phone number.

Run summaries are counts and ids by design, but they are free-form dicts written by six modules:
this is the one gate every value passes before it reaches a page or a JSON answer.
"""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are never shown, whatever they hold (message text, numbers, credentials).
HIDDEN_KEYS = frozenset(
    {
        "text", "body", "message", "message_body", "caption", "prompt", "reply", "content",
        "phone", "mobile", "to", "wa_id", "recipient", "from",
        "password", "secret", "token", "api_key", "access_token", "authorization", "signature",
        "receipt_handle", "receipthandle",
    }
)  # fmt: skip
HIDDEN = "(hidden)"
# An E.164 or national phone number: 10 to 15 digits in a row, maybe after "+" or "00". Dates,
# counts and ids in our summaries never hold ten digits in a row without a separator.
PHONE = re.compile(r"(?<![\d])(?:\+|00)?(\d{6,11})(\d{4})(?![\d])")


def mask_phones(text: str) -> str:
    return PHONE.sub(lambda match: "•" * 6 + match.group(2), text)


def redact(value: Any) -> Any:
    """A copy of ``value`` safe to show: hidden keys dropped to a marker, numbers masked."""
    if isinstance(value, dict):
        return {str(key): HIDDEN if str(key).lower() in HIDDEN_KEYS else redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return mask_phones(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 10:
        return mask_phones(str(value))
    return value
