"""Meta's WhatsApp Cloud API errors as the stand-in answers them: titles, details, HTTP statuses.

One table serves the synchronous answers (``{"error": {...}}`` of a failed send) and the
asynchronous ones (``errors[]`` of a ``failed`` status webhook, see :mod:`devstack.whatsapp_receipts`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from devstack._http import ApiError

ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# Meta's title and error_data.details for the codes the stand-in produces or is asked to inject.
KNOWN_ERRORS: dict[int, tuple[str, str]] = {
    100: ("Invalid parameter", "Invalid parameter"),
    131000: ("Something went wrong", "Message failed to send due to an unknown error."),
    131008: ("Required parameter is missing", "A required parameter is missing."),
    131009: ("Parameter value is not valid", "One or more parameter values are invalid."),
    131026: (
        "Message Undeliverable",
        "Message failed to send because the recipient's phone number is not a WhatsApp number "
        "or the recipient has not accepted the latest terms of service.",
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    ),
    131048: (
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent "
        "from this phone number.",
    ),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "to the same phone number in a short period of time.",
    ),
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    132000: ("Number of parameters does not match the expected number of params", "Parameter count mismatch."),
    132001: ("Template name does not exist in the translation", "Template name does not exist."),
    132012: (
        "Parameter format does not match format in the created template",
        "Variable parameter values formatted incorrectly.",
    ),
    132015: ("Template is Paused", "Template is paused due to low quality so it cannot be sent in a template message."),
    132016: (
        "Template is disabled",
        "Template has been paused too many times due to low quality and is now permanently disabled.",
    ),
    132018: (
        "There was an issue with the parameters in your template.",
        "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
    ),
    # Account-level errors: every send fails the same way until someone fixes the account.
    10: (
        "Application does not have permission for this action",
        "Permission has either not been granted or has been revoked.",
    ),
    190: ("Error validating access token", "Session has expired."),
    200: ("Permissions error", "Permission has either not been granted or has been revoked."),
    368: (
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted or disabled for "
        "violating a platform policy.",
    ),
    131031: (
        "Business Account locked",
        "The WhatsApp Business Account associated with the app has been restricted or disabled for "
        "violating a platform policy, or we were unable to verify data included in the request "
        "against data set on the WhatsApp Business Account.",
    ),
    131042: (
        "Business eligibility payment issue",
        "Message failed to send because there were one or more errors related to your payment method.",
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages "
        "on WhatsApp from your business",
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages.",
    ),
}
ACCOUNT_ERROR_CODES = frozenset({10, 190, 200, 368, 131031, 131042, 132001})
CODE_BY_STATUS = {400: 100, 401: 190, 403: 10, 429: 130429, 500: 131000, 503: 131000}
# Meta's HTTP status per code (a fault given only an ``error_code`` uses it); 400 otherwise.
STATUS_BY_CODE = {10: 403, 190: 401, 200: 403, 368: 403, 131031: 403, 132001: 404, 2500: 401, 130429: 429}


def meta_error(status: int, code: int, details: str | None = None) -> ApiError:
    title, default_details = KNOWN_ERRORS.get(code, ("Injected fault", "Injected fault."))
    if code == 190:
        # Graph API's token errors carry no "(#190)" prefix and no error_data, but a subcode.
        message = f"{title}: Session has expired on {datetime.now(UTC):%A, %d-%b-%y %H:%M:%S} UTC."
        return ApiError(status, message, code, extra={"error_subcode": 463})
    return ApiError(status, f"(#{code}) {title}", code, details or default_details)


def account_error_setting(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or value not in ACCOUNT_ERROR_CODES):
        raise ValueError(f"must be null or one of {sorted(ACCOUNT_ERROR_CODES)}")
    return value


def int_code(code: int | str | None) -> int | None:
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def status_for_code(code: int | str | None) -> int:
    return STATUS_BY_CODE.get(int_code(code) or 0, 400)


def webhook_error(code: int) -> dict[str, Any]:
    """One entry of a ``failed`` status's ``errors[]``, as Meta's webhooks carry it."""
    title, details = KNOWN_ERRORS.get(code, ("Injected fault", "Injected fault."))
    return {"code": code, "title": title, "message": title, "error_data": {"details": details}, "href": ERROR_CODES_URL}
