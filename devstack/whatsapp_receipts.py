"""Delivery receipts of the WhatsApp stand-in: Meta's ``statuses`` webhooks, signed, onto SQS.

In production Meta POSTs every status change of a sent message to our webhook (API Gateway,
``deploy/whatsapp-webhook-api.yaml``), which puts the raw body on the SQS queue
``leadflow-whatsapp-statuses`` with the ``X-Hub-Signature-256`` header as the message attribute
``signature``. The stand-in skips the HTTP hop and does what API Gateway does: ``SendMessage``
with the raw JSON and that attribute (``sha256=<hex HMAC-SHA256 of the body with the app secret>``).

As with Meta, receipts arrive *after* the send was answered 200 + wamid, one status per webhook,
signed, carrying the send's ``biz_opaque_callback_data``: ``sent``, ``delivered``, ``read``; or, for
a recipient configured to fail (``receipt_failures``), a single ``failed`` with Meta's ``errors[]``
(131047 re-engagement, 131026 undeliverable, ...). Meta does not promise order or uniqueness;
receipt faults make both happen on demand.

Control API (the webhook wiring survives ``/_control/reset``, like an app's webhook subscription;
a container gets it at start from ``LEADFLOW_WHATSAPP_WEBHOOK_QUEUE_URL``,
``LEADFLOW_WHATSAPP_APP_SECRET``, ``LEADFLOW_WHATSAPP_SQS_ENDPOINT`` and ``AWS_DEFAULT_REGION``):

  ``POST /_control/webhook``   ``{"queue_url", "app_secret", "sqs_endpoint", "region"}``
  ``GET  /_control/webhook``   the wiring (never the secret)
  ``POST /_control/receipt_faults``  ``{"faults": [{"count", "action", "delay", "statuses"}]}``: each
      accepted send takes the first pending fault; ``action`` is ``drop`` (its receipts, or only
      those in ``statuses``), ``duplicate`` (each receipt twice), ``reorder`` (newest first) or
      ``delay`` (``delay`` more seconds)
  ``GET  /_control/receipts``  ``{"pending": n, "log": [...]}``: what was posted, dropped or lost

Settings (reset by ``/_control/reset``): ``receipts`` (on/off), ``receipt_statuses``
(``["sent", "delivered", "read"]``), ``receipt_failures`` (``{"<recipient digits>": code}``),
``receipt_delay_seconds`` (before a send's first receipt) and ``receipt_interval_seconds``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack._http import ApiError
from devstack.whatsapp_errors import webhook_error

RECEIPTS_FILE = "receipts.jsonl"
STATUSES = ("sent", "delivered", "read")
SIGNATURE_ATTRIBUTE = "signature"
WABA_ID = "100000000000002"
DISPLAY_PHONE_NUMBER = "15550001111"
RECEIPT_ACTIONS = frozenset({"drop", "duplicate", "reorder", "delay"})
SQS_BATCH = 10
# A container has no one to POST /_control/webhook after each restart: it reads its wiring here.
ENV_QUEUE_URL = "LEADFLOW_WHATSAPP_WEBHOOK_QUEUE_URL"
ENV_APP_SECRET = "LEADFLOW_WHATSAPP_APP_SECRET"  # noqa: S105 - the variable's name, not a secret
ENV_SQS_ENDPOINT = "LEADFLOW_WHATSAPP_SQS_ENDPOINT"


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` header Meta sends with a webhook body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def status_entry(
    wamid: str,
    status: str,
    timestamp: int,
    recipient_id: str,
    callback_data: str | None = None,
    error_code: int | None = None,
    pricing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``statuses[]`` entry as Meta's ``messages`` webhook carries it; ``pricing`` is what the
    message is billed as (default: a utility template), on every status but ``failed``."""
    entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(timestamp), "recipient_id": recipient_id}
    if callback_data is not None:
        entry["biz_opaque_callback_data"] = callback_data
    pricing = dict(pricing or UTILITY_PRICING)
    if status == "sent":
        entry["conversation"] = {
            "id": hashlib.sha1(recipient_id.encode()).hexdigest()[:32],  # noqa: S324 - an id, not security
            "expiration_timestamp": str(timestamp + 86_400),
            "origin": {"type": pricing["category"]},
        }
    if status != "failed":
        entry["pricing"] = pricing
    if status == "failed":
        entry["errors"] = [webhook_error(error_code or 131000)]
    return entry


UTILITY_PRICING = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}


def pricing_for(message: Mapping[str, Any], template_category: str | None) -> dict[str, Any]:
    """What Meta bills a message as under per-message pricing (PMP): a template by the category
    it is approved in; a free-form message (only possible inside the 24-hour customer-service
    window) is a free service message."""
    if message.get("type") == "template":
        category = (template_category or "marketing").lower()
        return {"billable": True, "pricing_model": "PMP", "category": category, "type": "regular"}
    return {"billable": False, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"}


def template_category_body(template: Mapping[str, Any], previous: str, new: str, waba_id: str) -> dict[str, Any]:
    """Meta's ``template_category_update`` webhook (a completed change) for ``template``."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba_id,
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "template_category_update",
                        "value": {
                            "message_template_id": int(template["id"]),
                            "message_template_name": template["name"],
                            "message_template_language": template["language"],
                            "previous_category": previous,
                            "new_category": new,
                        },
                    }
                ],
            }
        ],
    }


def webhook_body(statuses: Sequence[Mapping[str, Any]], phone_number_id: str) -> dict[str, Any]:
    """The whole webhook: ``object`` → ``entry[]`` → ``changes[]`` → ``value.statuses[]``."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": phone_number_id},
        "statuses": list(statuses),
    }
    change = {"value": value, "field": "messages"}
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [change]}]}


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# -- settings and faults ----------------------------------------------------------------------


def status_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not set(value) <= set(STATUSES):
        raise ValueError(f"must be a list drawn from {list(STATUSES)}")
    return tuple(value)


def failures_setting(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    ):
        raise ValueError('must be {"<recipient digits>": <Meta error code>}')
    return {k.lstrip("+"): v for k, v in value.items()}


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


@dataclass
class ReceiptFault:
    remaining: int
    action: str
    delay: float = 0.0
    statuses: frozenset[str] | None = None

    @classmethod
    def from_json(cls, raw: Any) -> ReceiptFault:
        if not isinstance(raw, dict) or set(raw) - {"count", "action", "delay", "statuses"}:
            raise ApiError(400, 'a receipt fault is {"count", "action", "delay", "statuses"}')
        count, action, delay = raw.get("count", 1), raw.get("action"), raw.get("delay", 0.0)
        if action not in RECEIPT_ACTIONS:
            raise ApiError(400, f"receipt fault 'action' must be one of {sorted(RECEIPT_ACTIONS)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ApiError(400, "receipt fault 'count' must be an integer >= 1")
        if not isinstance(delay, int | float) or delay < 0:
            raise ApiError(400, "receipt fault 'delay' must be a number of seconds >= 0")
        statuses = raw.get("statuses")
        if statuses is not None and (not isinstance(statuses, list) or not set(statuses) <= {*STATUSES, "failed"}):
            raise ApiError(400, "receipt fault 'statuses' must list sent/delivered/read/failed")
        return cls(count, action, float(delay), frozenset(statuses) if statuses is not None else None)


@dataclass(frozen=True)
class Webhook:
    queue_url: str
    app_secret: str
    sqs_endpoint: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_json(cls, raw: Any) -> Webhook:
        if not isinstance(raw, dict) or not raw.get("queue_url") or not raw.get("app_secret"):
            raise ApiError(400, 'body must be {"queue_url", "app_secret", "sqs_endpoint"?, "region"?}')
        region = raw.get("region") or "us-east-1"
        return cls(str(raw["queue_url"]), str(raw["app_secret"]), raw.get("sqs_endpoint"), region)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Webhook | None:
        """The wiring a container is started with (docker-compose.yaml), or None if not given."""
        queue_url, app_secret = env.get(ENV_QUEUE_URL), env.get(ENV_APP_SECRET)
        if not queue_url or not app_secret:
            return None
        region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(queue_url, app_secret, env.get(ENV_SQS_ENDPOINT) or None, region)


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    wamid: str = field(compare=False)
    status: str = field(compare=False)
    code: int | None = field(compare=False)
    body: bytes = field(compare=False)


# -- the dispatcher ---------------------------------------------------------------------------


class ReceiptDispatcher:
    """Posts scheduled receipts to the webhook's queue from one background thread."""

    def __init__(self, data_dir: Path | None) -> None:
        self._path = data_dir / RECEIPTS_FILE if data_dir is not None else None
        self._cond = threading.Condition()
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._faults: list[ReceiptFault] = []
        self._log: list[dict[str, Any]] = [r for rs in read_receipts(self._path).values() for r in rs]
        self._webhook: Webhook | None = None
        self._client: Any = None
        self._posting = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="whatsapp-receipts", daemon=True)
        self._thread.start()
        from_env = Webhook.from_env(os.environ)
        if from_env is not None:
            self.configure(from_env)

    # -- control ------------------------------------------------------------------------------

    def configure(self, webhook: Webhook) -> None:
        import boto3

        client = boto3.client(
            "sqs", endpoint_url=webhook.sqs_endpoint, region_name=webhook.region,
            # moto and LocalStack take any key; "testing" is LocalStack's account 000000000000.
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        with self._cond:
            self._webhook, self._client = webhook, client

    def wiring(self) -> dict[str, Any]:
        webhook = self._webhook
        if webhook is None:
            return {"configured": False}
        return {"configured": True, "queue_url": webhook.queue_url, "sqs_endpoint": webhook.sqs_endpoint}

    def add_faults(self, raw: Any) -> int:
        if not isinstance(raw, list):
            raise ApiError(400, 'body must be {"faults": [...]}')
        faults = [ReceiptFault.from_json(item) for item in raw]
        with self._cond:
            self._faults.extend(faults)
            return len(self._faults)

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {"pending": len(self._heap) + self._posting, "faults": len(self._faults), "log": list(self._log)}

    def reset(self) -> None:
        """Forget scheduled receipts, faults and the log; keep the webhook wiring."""
        with self._cond:
            self._heap.clear()
            self._faults.clear()
            self._log.clear()
            if self._path is not None:
                self._path.write_text("", encoding="utf-8")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- scheduling ---------------------------------------------------------------------------

    def schedule(self, statuses: list[dict[str, Any]], phone_number_id: str, *, delay: float, interval: float) -> None:
        """Queue one webhook per status, after ``delay`` and ``interval`` apart, faults applied."""
        with self._cond:
            fault = self._take_fault()
        if fault is not None and fault.action == "drop":
            dropped = [s for s in statuses if fault.statuses is None or s["status"] in fault.statuses]
            for entry in dropped:
                self._record(entry["id"], entry["status"], _code(entry), "dropped")
            statuses = [s for s in statuses if s not in dropped]
        elif fault is not None and fault.action == "duplicate":
            statuses = [s for s in statuses for _ in range(2)]
        elif fault is not None and fault.action == "reorder":
            statuses = statuses[::-1]
        elif fault is not None and fault.action == "delay":
            delay += fault.delay
        start = time.monotonic() + delay
        with self._cond:
            for n, entry in enumerate(statuses):
                body = encode(webhook_body([entry], phone_number_id))
                due = _Due(start + n * interval, next(self._seq), entry["id"], entry["status"], _code(entry), body)
                heapq.heappush(self._heap, due)
            self._cond.notify_all()

    def schedule_body(self, body: Mapping[str, Any], label: str, *, delay: float) -> None:
        """Queue one webhook of another field (e.g. ``template_category_update``), no faults applied."""
        with self._cond:
            due = _Due(time.monotonic() + delay, next(self._seq), label, label, None, encode(body))
            heapq.heappush(self._heap, due)
            self._cond.notify_all()

    def _take_fault(self) -> ReceiptFault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.remaining -= 1
        if fault.remaining == 0:
            self._faults.pop(0)
        return fault

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].at > time.monotonic()):
                    timeout = self._heap[0].at - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                batch = [heapq.heappop(self._heap) for _ in range(min(SQS_BATCH, len(self._heap)))
                         if self._heap[0].at <= time.monotonic()]  # fmt: skip
                webhook, client = self._webhook, self._client
                self._posting = len(batch)
            try:
                self._post(batch, webhook, client)
            finally:
                with self._cond:
                    self._posting = 0

    def _post(self, batch: list[_Due], webhook: Webhook | None, client: Any) -> None:
        if webhook is None:
            for due in batch:
                self._record(due.wamid, due.status, due.code, "no_webhook")
            return
        entries = [
            {
                "Id": str(n),
                "MessageBody": due.body.decode(),
                "MessageAttributes": {
                    SIGNATURE_ATTRIBUTE: {"DataType": "String", "StringValue": sign(due.body, webhook.app_secret)}
                },
            }
            for n, due in enumerate(batch)
        ]
        try:
            response = client.send_message_batch(QueueUrl=webhook.queue_url, Entries=entries)
            failed = {int(f["Id"]) for f in response.get("Failed") or []}
        except Exception as exc:  # noqa: BLE001 - Meta's webhook delivery failing is logged, not fatal
            print(f"whatsapp stand-in: posting receipts failed: {exc}", file=sys.stderr)
            failed = set(range(len(batch)))
        for n, due in enumerate(batch):
            self._record(due.wamid, due.status, due.code, "lost" if n in failed else "posted")

    def _record(self, wamid: str, status: str, code: int | None, outcome: str) -> None:
        record = {
            "wamid": wamid,
            "status": status,
            "code": code,
            "outcome": outcome,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        with self._cond:
            self._log.append(record)
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")


def _code(entry: Mapping[str, Any]) -> int | None:
    errors = entry.get("errors") or []
    return errors[0]["code"] if errors else None


# -- reading the log (the outbox CLI) ---------------------------------------------------------


def read_receipts(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The receipts log of ``path`` grouped by wamid, oldest first."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    if path is None or not path.exists():
        return grouped
    for line in _lines(path):
        grouped.setdefault(line["wamid"], []).append(line)
    return grouped


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def delivery_line(records: Sequence[Mapping[str, Any]]) -> str:
    """``sent → delivered → read``, ``failed 131047``, with dropped/lost receipts marked."""
    if not records:
        return "no receipts (yet)"
    parts = []
    for record in records:
        label = f"{record['status']} {record['code']}" if record.get("code") else str(record["status"])
        if record.get("outcome") != "posted":
            label += f" ({record.get('outcome')})"
        parts.append(label)
    return " → ".join(parts)
