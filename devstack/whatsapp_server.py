"""WhatsApp Business Cloud API stand-in: ``POST /{api_version}/{phone_number_id}/messages``.

Validates a send the way Meta does (the parts the project uses: text, image, video, document
and template messages), answers in Meta's success and error formats, and keeps every accepted
message in an outbox: ``outbox.jsonl`` in ``--data-dir`` (one JSON payload per line, plus
``wamid``, ``phone_number_id`` and ``received_at``) and ``GET /_control/outbox``.

Settings (``POST /_control/settings``): ``templates`` (approved template names; empty = any),
``pair_rate_limit_seconds`` (a second message to the same number within that time fails with
131056; 0 = off), ``access_token`` (when set, the only token accepted), ``account_error`` (an
account-level outage: 131042, 132001, 10, 200, 190, 368 or 131031 on every send until reset to
null) and ``latency``. Faults (``POST /_control/faults``, see :mod:`devstack._http`) add
one-off errors (``{"error_code": 131042}`` gets Meta's status and body) and the
accept-then-lose-the-answer fault (``{"answer": "drop"}`` or ``"hang"``).

    python -m devstack.whatsapp_server --port 8093 --data-dir .local/whatsapp
    python -m devstack.whatsapp_server outbox --data-dir .local/whatsapp
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from devstack._http import (
    ApiError,
    Fault,
    Request,
    Route,
    Setting,
    StandInServer,
    non_negative_float,
    route,
    run_main,
)

OUTBOX_FILE = "outbox.jsonl"
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MEDIA_TYPES = ("image", "video", "document")

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
_CODE_BY_STATUS = {400: 100, 401: 190, 403: 10, 429: 130429, 500: 131000, 503: 131000}
# Meta's HTTP status per code (a fault given only an ``error_code`` uses it); 400 otherwise.
_STATUS_BY_CODE = {10: 403, 190: 401, 200: 403, 368: 403, 131031: 403, 132001: 404, 2500: 401, 130429: 429}
_BAD_TEMPLATE_TEXT = re.compile(r"[\n\t]| {5,}")
_PHONE = re.compile(r"\+?(\d{7,15})")


def meta_error(status: int, code: int, details: str | None = None) -> ApiError:
    title, default_details = KNOWN_ERRORS.get(code, ("Injected fault", "Injected fault."))
    if code == 190:
        # Graph API's token errors carry no "(#190)" prefix and no error_data, but a subcode.
        message = f"{title}: Session has expired on {datetime.now(UTC):%A, %d-%b-%y %H:%M:%S} UTC."
        return ApiError(status, message, code, extra={"error_subcode": 463})
    return ApiError(status, f"(#{code}) {title}", code, details or default_details)


def _account_error(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or value not in ACCOUNT_ERROR_CODES):
        raise ValueError(f"must be null or one of {sorted(ACCOUNT_ERROR_CODES)}")
    return value


def _missing(details: str) -> ApiError:
    return meta_error(400, 131008, details)


def _invalid(details: str) -> ApiError:
    return meta_error(400, 100, details)


# -- payload validation, one checker per message type ------------------------------------------


def _object(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if value is None:
        raise _missing(f"The parameter {key} is required.")
    if not isinstance(value, dict):
        raise _invalid(f"Param {key} must be a JSON object.")
    return value


def _check_text(message: Mapping[str, Any], _templates: frozenset[str]) -> None:
    body = _object(message, "text").get("body")
    if not isinstance(body, str) or not body:
        raise _missing("The parameter text['body'] is required.")
    if len(body) > MAX_TEXT_LENGTH:
        raise _invalid(f"Param text['body'] must be at most {MAX_TEXT_LENGTH} characters long.")


def _check_media(message: Mapping[str, Any], _templates: frozenset[str]) -> None:
    kind = message["type"]
    media = _object(message, kind)
    link, media_id = media.get("link"), media.get("id")
    if not link and not media_id:
        raise _missing(f"The parameter {kind}['link'] or {kind}['id'] is required.")
    if link is not None and (not isinstance(link, str) or not link.startswith(("http://", "https://"))):
        raise _invalid(f"Param {kind}['link'] must be a valid http(s) URL.")
    caption = media.get("caption")
    if caption is not None and (not isinstance(caption, str) or len(caption) > MAX_CAPTION_LENGTH):
        raise _invalid(f"Param {kind}['caption'] must be a string of at most {MAX_CAPTION_LENGTH} characters.")


def _check_template(message: Mapping[str, Any], templates: frozenset[str]) -> None:
    template = _object(message, "template")
    name = template.get("name")
    if not isinstance(name, str) or not name:
        raise _missing("The parameter template['name'] is required.")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(code, str) or not code:
        raise _missing("The parameter template['language']['code'] is required.")
    components = template.get("components") or []
    if not isinstance(components, list):
        raise _invalid("Param template['components'] must be an array.")
    for i, component in enumerate(components):
        if not isinstance(component, dict) or not component.get("type"):
            raise _missing(f"The parameter template['components'][{i}]['type'] is required.")
        for j, parameter in enumerate(component.get("parameters") or []):
            where = f"template['components'][{i}]['parameters'][{j}]"
            if not isinstance(parameter, dict) or not parameter.get("type"):
                raise _missing(f"The parameter {where}['type'] is required.")
            if parameter["type"] != "text":
                continue
            text = parameter.get("text")
            if not isinstance(text, str) or not text:
                raise _missing(f"The parameter {where}['text'] is required.")
            if _BAD_TEMPLATE_TEXT.search(text):
                raise meta_error(400, 132018)
    # Checked last, as Meta does: a well-formed send to an unapproved template is a 404.
    if templates and name not in templates:
        raise meta_error(404, 132001, f"template name ({name}) does not exist in {code}")


_CHECKERS: dict[str, Callable[[Mapping[str, Any], frozenset[str]], None]] = {
    "text": _check_text,
    **dict.fromkeys(MEDIA_TYPES, _check_media),
    "template": _check_template,
}


def validate_message(message: Any, templates: frozenset[str]) -> str:
    """Raise the ApiError Meta would answer for ``message``; return the recipient's digits."""
    if not isinstance(message, dict):
        raise _invalid("The request body must be a JSON object.")
    product = message.get("messaging_product")
    if product is None:
        raise _missing("The parameter messaging_product is required.")
    if product != "whatsapp":
        raise _invalid("Param messaging_product must be 'whatsapp'.")
    to = message.get("to")
    if to is None or to == "":
        raise _missing("The parameter to is required.")
    phone = _PHONE.fullmatch(to) if isinstance(to, str) else None
    if phone is None:
        raise _invalid("Param to must be a phone number: digits, optionally starting with '+'.")
    message.setdefault("type", "text")  # Meta's default
    checker = _CHECKERS.get(message["type"])
    if checker is None:
        raise _invalid(f"Param type must be one of {{{', '.join(_CHECKERS)}}}.")
    checker(message, templates)
    return phone[1]


# -- outbox ---------------------------------------------------------------------------------


def read_outbox(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    print(f"whatsapp stand-in: skipping bad line {number} of {path}", file=sys.stderr)


def _templates_setting(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError("must be a list of template names")
    return frozenset(value)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be a string or null")
    return value or None


def _int_code(code: int | str | None) -> int | None:
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _wamid(digits: str) -> str:
    raw = f"{digits}:{uuid.uuid4().hex}".encode()
    return "wamid." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class WhatsAppServer(StandInServer):
    service_name = "whatsapp"
    settings_spec: ClassVar[dict[str, Setting]] = {
        **StandInServer.settings_spec,
        "templates": Setting(frozenset(), _templates_setting),
        "pair_rate_limit_seconds": Setting(0.0, non_negative_float),
        "access_token": Setting(None, _optional_str),
        # An account-level outage: every send fails with this code until it is set back to null.
        "account_error": Setting(None, _account_error),
    }

    def load_state(self) -> None:
        self._lock = threading.Lock()
        self._last_sent: dict[tuple[str, str], float] = {}  # (phone_number_id, digits) -> monotonic time
        self._outbox: list[dict[str, Any]] = list(read_outbox(self._outbox_path)) if self._outbox_path else []

    @property
    def _outbox_path(self) -> Path | None:
        return self.data_dir / OUTBOX_FILE if self.data_dir is not None else None

    def api_routes(self) -> list[Route]:
        return [route("POST", r"/(v\d+(?:\.\d+)?)/(\d+)/messages", self._send_message)]

    def extra_control_routes(self) -> list[Route]:
        return [route("GET", r"/_control/outbox", self._control_outbox)]

    def render_error(self, error: ApiError) -> Any:
        body: dict[str, Any] = {"message": error.message, "type": "OAuthException", "code": error.code}
        body.update(error.extra)
        if error.details is not None:
            body["error_data"] = {"messaging_product": "whatsapp", "details": error.details}
        body["fbtrace_id"] = secrets.token_urlsafe(16)
        return {"error": body}

    def status_for_code(self, code: int | str | None) -> int:
        return _STATUS_BY_CODE.get(_int_code(code) or 0, 400)

    def fault_error(self, fault: Fault) -> ApiError:
        status = fault.status or self.status_for_code(fault.error_code)
        code = _int_code(fault.error_code)
        if code is None:
            code = _CODE_BY_STATUS.get(status, 131000)
        error = meta_error(status, code)
        if fault.message:
            error.message = fault.message
        return error

    def reset_state(self) -> None:
        with self._lock:
            self._outbox = []
            self._last_sent.clear()
            if self._outbox_path is not None:
                self._outbox_path.write_text("", encoding="utf-8")

    def outbox(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._outbox)

    def _authorize(self, request: Request) -> None:
        if not request.headers.get("Authorization"):
            raise ApiError(
                401, "An active access token must be used to query information about the current user.", 2500
            )
        token = request.bearer_token()
        expected = self.settings["access_token"]
        if token is None or (expected is not None and token != expected):
            raise ApiError(401, "Invalid OAuth access token - Cannot parse access token", 190)

    def _send_message(self, request: Request, _api_version: str, phone_number_id: str) -> dict[str, Any]:
        self._authorize(request)
        outage = self.settings["account_error"]
        if outage is not None:
            raise meta_error(self.status_for_code(outage), outage)
        message = request.json()
        digits = validate_message(message, self.settings["templates"])
        wamid = _wamid(digits)
        window = self.settings["pair_rate_limit_seconds"]
        with self._lock:
            now = time.monotonic()
            previous = self._last_sent.get((phone_number_id, digits))
            if window and previous is not None and now - previous < window:
                raise meta_error(400, 131056)
            self._last_sent[(phone_number_id, digits)] = now
            entry = {
                **message,
                "wamid": wamid,
                "phone_number_id": phone_number_id,
                "received_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            self._outbox.append(entry)
            if self._outbox_path is not None:
                with self._outbox_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sent: dict[str, Any] = {"id": wamid}
        if message["type"] == "template":
            sent["message_status"] = "accepted"
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": message["to"], "wa_id": digits}],
            "messages": [sent],
        }

    def _control_outbox(self, _request: Request) -> list[dict[str, Any]]:
        return self.outbox()


# -- the outbox CLI ---------------------------------------------------------------------------


def _describe_text(entry: Mapping[str, Any]) -> str:
    return str(entry["text"]["body"])


def _describe_media(entry: Mapping[str, Any]) -> str:
    media = entry[entry["type"]]
    caption = media.get("caption")
    return f"{media.get('link') or 'media id ' + str(media.get('id'))}" + (f"\ncaption: {caption}" if caption else "")


def _describe_template(entry: Mapping[str, Any]) -> str:
    template = entry["template"]
    params = [
        str(parameter.get("text", parameter.get("type")))
        for component in template.get("components") or []
        for parameter in component.get("parameters") or []
    ]
    head = f"{template['name']} ({template['language']['code']})"
    return head + (f"\nparameters: {' | '.join(params)}" if params else "")


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "text": _describe_text,
    **dict.fromkeys(MEDIA_TYPES, _describe_media),
    "template": _describe_template,
}


def outbox_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.whatsapp_server outbox",
        description="Print the messages the WhatsApp stand-in accepted, oldest first.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the server's --data-dir")
    args = parser.parse_args(argv)
    entries = list(read_outbox(args.data_dir / OUTBOX_FILE))
    if not entries:
        print(f"the outbox in {args.data_dir} is empty")
        return 0
    for number, entry in enumerate(entries, 1):
        kind = entry.get("type", "text")
        describe = _DESCRIBERS.get(kind, lambda e: json.dumps(e, ensure_ascii=False))
        print(f"#{number}  {entry.get('received_at')}  to {entry.get('to')}  [{kind}]  {entry.get('wamid')}")
        for line in describe(entry).splitlines() or [""]:
            print(f"    {line}")
    print(f"{len(entries)} message(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(WhatsAppServer, argv, {"outbox": outbox_command}, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
