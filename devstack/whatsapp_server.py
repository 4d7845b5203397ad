"""WhatsApp Business Cloud API stand-in: ``POST /{api_version}/{phone_number_id}/messages``.

Validates a send the way Meta does: every body against Meta's own OpenAPI spec
(:mod:`devstack.whatsapp_spec`, 400 / code 100 "Invalid parameter"), and Meta's more specific
codes for the parts the project uses (text, image, video, document and template messages);
answers in Meta's success and error formats, and keeps every accepted message in an outbox:
``outbox.jsonl`` in ``--data-dir`` (one JSON payload per line, plus ``wamid``, ``phone_number_id``
and ``received_at``) and ``GET /_control/outbox``.

Settings (``POST /_control/settings``): ``templates`` (the approved templates with their structure,
default: the project's set in ``devstack/whatsapp_templates.json``; a list of bare names checks
names only; empty = any; see :mod:`devstack.whatsapp_templates`),
``paused_templates`` (``{name: 132015 | 132016}``: Meta paused / disabled that template for low
quality, its sends fail with that code), ``pair_rate_limit_seconds`` (a second message to the same
number within that time fails with 131056; 0 = off), ``access_token`` (when set, the only token
accepted), ``account_error`` (an account-level outage: 131042, 132001, 10, 200, 190, 368 or
131031 on every send until reset to null) and ``latency``. Faults (``POST /_control/faults``, see
:mod:`devstack._http`) add one-off errors (``{"error_code": 131042}`` gets Meta's status and body) and the
accept-then-lose-the-answer fault (``{"answer": "drop"}`` or ``"hang"``).

``POST /_control/template_category`` (``{"name", "language", "category"}``) re-categorises an
approved template as Meta does and posts Meta's ``template_category_update`` webhook (signed, to
the statuses queue like the receipts); receipts carry ``pricing`` by the template's category
(a free-form message: ``service``, not billable).

After each accepted send the stand-in delivers Meta's delivery receipts (``statuses`` webhooks,
signed with the app secret) to the statuses SQS queue: see :mod:`devstack.whatsapp_receipts` for
the wiring, the per-recipient failures and the receipt faults (drop, delay, duplicate, reorder).

    python -m devstack.whatsapp_server --port 8093 --data-dir .local/whatsapp
    python -m devstack.whatsapp_server outbox --data-dir .local/whatsapp
"""

from __future__ import annotations

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
from devstack.whatsapp_errors import (
    CODE_BY_STATUS,
    account_error_setting,
    int_code,
    meta_error,
    status_for_code,
)
from devstack.whatsapp_receipts import (
    STATUSES,
    WABA_ID,
    ReceiptDispatcher,
    Webhook,
    boolean,
    failures_setting,
    pricing_for,
    status_entry,
    status_list,
    template_category_body,
)
from devstack.whatsapp_spec import SpecViolation, check_message, message_validator
from devstack.whatsapp_templates import Approved, check_media, check_template_send, load_templates, templates_setting

OUTBOX_FILE = "outbox.jsonl"
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MEDIA_TYPES = ("image", "video", "document")
MAX_CALLBACK_DATA_LENGTH = 512  # biz_opaque_callback_data
_BAD_TEMPLATE_TEXT = re.compile(r"[\n\t]| {5,}")
_PHONE = re.compile(r"\+?(\d{7,15})")


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


def _check_text(message: Mapping[str, Any]) -> None:
    body = _object(message, "text").get("body")
    if not isinstance(body, str) or not body:
        raise _missing("The parameter text['body'] is required.")
    if len(body) > MAX_TEXT_LENGTH:
        raise _invalid(f"Param text['body'] must be at most {MAX_TEXT_LENGTH} characters long.")


def _check_media(message: Mapping[str, Any]) -> None:
    kind = message["type"]
    media = _object(message, kind)
    check_media(kind, media)
    caption = media.get("caption")
    if caption is not None and (not isinstance(caption, str) or len(caption) > MAX_CAPTION_LENGTH):
        raise _invalid(f"Param {kind}['caption'] must be a string of at most {MAX_CAPTION_LENGTH} characters.")


def _check_template(message: Mapping[str, Any]) -> None:
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


_CHECKERS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "text": _check_text,
    **dict.fromkeys(MEDIA_TYPES, _check_media),
    "template": _check_template,
}


def validate_message(message: Any, templates: Sequence[Approved]) -> str:
    """Raise the ApiError Meta would answer for ``message``; return the recipient's digits.

    Meta's specific codes first (131008 missing parameter, 132018 template text), then the body
    against Meta's OpenAPI spec (:mod:`devstack.whatsapp_spec`: 100 "Invalid parameter"), then
    the template's approval and structure (132001 / 132000 / 132012).
    """
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
    callback = message.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > MAX_CALLBACK_DATA_LENGTH):
        raise _invalid(f"Param biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_DATA_LENGTH} chars.")
    message.setdefault("type", "text")  # Meta's default
    checker = _CHECKERS.get(message["type"])
    if checker is None:
        raise _invalid(f"Param type must be one of {{{', '.join(_CHECKERS)}}}.")
    checker(message)
    try:
        check_message(message)
    except SpecViolation as violation:
        raise _invalid(violation.details) from None
    if message["type"] == "template":
        # Checked last, as Meta does: a well-formed send to an unapproved template is a 404, one
        # whose parameters do not fit the approved structure a 132000 / 132012.
        template = message["template"]
        check_template_send(template["name"], template["language"]["code"], template.get("components") or [], templates)
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


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be a string or null")
    return value or None


def _paused_templates(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(code in (132015, 132016) for code in value.values()):
        raise ValueError("must be {template name: 132015 (paused) or 132016 (disabled)}")
    return {str(name): int(code) for name, code in value.items()}


def _template_of(templates: Sequence[Approved], name: str, language: str) -> dict[str, Any] | None:
    for item in templates:
        if isinstance(item, dict) and item.get("name") == name and item.get("language") == language:
            return item
    return None


def _wamid(digits: str) -> str:
    raw = f"{digits}:{uuid.uuid4().hex}".encode()
    return "wamid." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class WhatsAppServer(StandInServer):
    service_name = "whatsapp"
    settings_spec: ClassVar[dict[str, Setting]] = {
        **StandInServer.settings_spec,
        "templates": Setting(load_templates(), templates_setting),
        "pair_rate_limit_seconds": Setting(0.0, non_negative_float),
        "paused_templates": Setting({}, _paused_templates),
        "access_token": Setting(None, _optional_str),
        # An account-level outage: every send fails with this code until it is set back to null.
        "account_error": Setting(None, account_error_setting),
        "receipts": Setting(True, boolean),
        "receipt_statuses": Setting(STATUSES, status_list),
        "receipt_failures": Setting({}, failures_setting),
        "receipt_delay_seconds": Setting(0.1, non_negative_float),
        "receipt_interval_seconds": Setting(0.02, non_negative_float),
    }

    def load_state(self) -> None:
        message_validator()  # 1 MB of YAML: read and compiled once per process, before any request
        self.receipts = ReceiptDispatcher(self.data_dir)
        self._lock = threading.Lock()
        self._last_sent: dict[tuple[str, str], float] = {}  # (phone_number_id, digits) -> monotonic time
        self._outbox: list[dict[str, Any]] = list(read_outbox(self._outbox_path)) if self._outbox_path else []

    @property
    def _outbox_path(self) -> Path | None:
        return self.data_dir / OUTBOX_FILE if self.data_dir is not None else None

    def api_routes(self) -> list[Route]:
        return [route("POST", r"/(v\d+(?:\.\d+)?)/(\d+)/messages", self._send_message)]

    def extra_control_routes(self) -> list[Route]:
        return [
            route("GET", r"/_control/outbox", self._control_outbox),
            route("GET", r"/_control/webhook", lambda _r: self.receipts.wiring()),
            route("POST", r"/_control/webhook", self._configure_webhook),
            route("POST", r"/_control/receipt_faults", self._add_receipt_faults),
            route("GET", r"/_control/receipts", lambda _r: self.receipts.state()),
            route("POST", r"/_control/template_category", self._recategorise),
        ]

    def server_close(self) -> None:
        self.receipts.stop()
        super().server_close()

    def render_error(self, error: ApiError) -> Any:
        body: dict[str, Any] = {"message": error.message, "type": "OAuthException", "code": error.code}
        body.update(error.extra)
        if error.details is not None:
            body["error_data"] = {"messaging_product": "whatsapp", "details": error.details}
        body["fbtrace_id"] = secrets.token_urlsafe(16)
        return {"error": body}

    def status_for_code(self, code: int | str | None) -> int:
        return status_for_code(code)

    def fault_error(self, fault: Fault) -> ApiError:
        status = fault.status or self.status_for_code(fault.error_code)
        code = int_code(fault.error_code)
        if code is None:
            code = CODE_BY_STATUS.get(status, 131000)
        error = meta_error(status, code)
        if fault.message:
            error.message = fault.message
        return error

    def reset_state(self) -> None:
        self.receipts.reset()
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
        if message["type"] == "template":
            paused = self.settings["paused_templates"].get(message["template"]["name"])
            if paused is not None:
                raise meta_error(400, paused)
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
        self._schedule_receipts(entry, digits)
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

    def _configure_webhook(self, request: Request) -> dict[str, Any]:
        self.receipts.configure(Webhook.from_json(request.json_object()))
        return {"ok": True, **self.receipts.wiring()}

    def _add_receipt_faults(self, request: Request) -> dict[str, Any]:
        return {"ok": True, "queued": self.receipts.add_faults(request.json_object().get("faults"))}

    def _recategorise(self, request: Request) -> dict[str, Any]:
        body = request.json_object()
        name, language, category = body.get("name"), body.get("language", "en"), str(body.get("category", ""))
        if category not in ("UTILITY", "MARKETING", "AUTHENTICATION"):
            raise ApiError(400, "category must be UTILITY, MARKETING or AUTHENTICATION")
        with self._lock:
            templates = list(self.settings["templates"])
            current = _template_of(templates, str(name), str(language))
            if current is None:
                raise ApiError(404, f"no approved template {name!r} in {language!r} with a definition")
            previous = str(current.get("category") or "MARKETING")
            updated = {**current, "category": category, "id": current.get("id") or abs(hash((name, language)))}
            templates[templates.index(current)] = updated
            self.settings["templates"] = tuple(templates)
        webhook = template_category_body(updated, previous, category, WABA_ID)
        self.receipts.schedule_body(webhook, f"template:{name}", delay=self.settings["receipt_delay_seconds"])
        return {"ok": True, "previous_category": previous, "new_category": category}

    def _pricing(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        if entry.get("type") != "template":
            return pricing_for(entry, None)
        template = entry["template"]
        approved = _template_of(self.settings["templates"], template["name"], template["language"]["code"])
        return pricing_for(entry, approved.get("category") if approved else None)

    def _schedule_receipts(self, entry: Mapping[str, Any], digits: str) -> None:
        settings = self.settings
        if not settings["receipts"]:
            return
        wamid, callback = str(entry["wamid"]), entry.get("biz_opaque_callback_data")
        now = int(time.time())
        failure = settings["receipt_failures"].get(digits)
        if failure == 131047 and entry.get("type") == "template":
            failure = None  # the 24-hour window never applies to approved templates
        if failure is not None:
            # Undeliverable: Meta answered 200 + wamid, then reports a single "failed".
            statuses = [status_entry(wamid, "failed", now, digits, callback, failure)]
        else:
            pricing = self._pricing(entry)
            statuses = [
                status_entry(wamid, status, now + n, digits, callback, pricing=pricing)
                for n, status in enumerate(settings["receipt_statuses"])
            ]
        self.receipts.schedule(
            statuses,
            str(entry["phone_number_id"]),
            delay=settings["receipt_delay_seconds"],
            interval=settings["receipt_interval_seconds"],
        )


def main(argv: Sequence[str] | None = None) -> int:
    from devstack.whatsapp_outbox import outbox_command

    return run_main(WhatsAppServer, argv, {"outbox": outbox_command}, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
