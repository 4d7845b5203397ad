"""Helpers for the receipts tests: wait for the stand-in's receipts, post webhooks, read the ledger."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests

from devstack import clients
from devstack.services import WHATSAPP_APP_SECRET
from devstack.whatsapp_receipts import encode, sign, status_entry, webhook_body
from tests.followups.support import Env
from tests.helpers import task_states, xcom_value

PHONE_NUMBER_ID = "100000000000001"


@dataclass
class ReceiptsEnv(Env):
    def receipts_log(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.whatsapp}/_control/receipts", timeout=5).json()["log"])

    def wait_receipts(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Block until the stand-in has handled ``count`` receipts (posted or dropped), none pending."""
        deadline = time.monotonic() + timeout
        while True:
            state = requests.get(f"{self.whatsapp}/_control/receipts", timeout=5).json()
            if state["pending"] == 0 and len(state["log"]) >= count:
                return list(state["log"])
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"receipts: {len(state['log'])} of {count} after {timeout}s ({state['pending']} pending)"
                )
            time.sleep(0.05)

    def receipt_faults(self, *faults: dict[str, Any]) -> None:
        requests.post(
            f"{self.whatsapp}/_control/receipt_faults", json={"faults": list(faults)}, timeout=5
        ).raise_for_status()

    def post_webhook(
        self,
        statuses: list[dict[str, Any]] | None = None,
        *,
        body: Any = None,
        signature: str | None = "valid",
        app_secret: str = WHATSAPP_APP_SECRET,
    ) -> str:
        """Put a webhook on the statuses queue as API Gateway would; ``signature`` None = absent,
        "valid" = Meta's signature with ``app_secret``."""
        raw = encode(body if body is not None else webhook_body(statuses or [], PHONE_NUMBER_ID)).decode()
        attributes = {}
        if signature is not None:
            value = sign(raw.encode(), app_secret) if signature == "valid" else signature
            attributes["signature"] = {"DataType": "String", "StringValue": value}
        return self.sqs.send_message(
            QueueUrl=self.stack.statuses_queue_url, MessageBody=raw, MessageAttributes=attributes
        )["MessageId"]

    def statuses_queue_counts(self) -> tuple[int, int]:
        return self.queue_counts(self.stack.statuses_queue_url)

    def statuses_dlq(self) -> list[dict[str, Any]]:
        return self.dlq(self.stack.statuses_dlq_url)


def status(wamid: str, kind: str, at: int, recipient: str, callback: str | None = None, code: int | None = None):
    return status_entry(wamid, kind, at, recipient, callback, code)


def run(dag: Any, max_wait_seconds: int = 3, *, expect: str = "success") -> Any:
    run = dag.test(run_conf={"max_wait_seconds": max_wait_seconds})
    assert run.state == expect, task_states(run)
    return run


def summary_of(run: Any, task_id: str = "apply_receipts") -> dict[str, Any]:
    value = xcom_value(run, task_id)
    return json.loads(value) if isinstance(value, str) else value


def whatsapp_connection_with(app_secret: str) -> str:
    """The ``whatsapp_default`` connection as it is, but holding ``app_secret`` (as JSON)."""
    from airflow.models import Connection

    conn = Connection.get_connection_from_secrets("whatsapp_default")
    extra = {**conn.extra_dejson, "app_secret": app_secret}
    return Connection(
        conn_id=conn.conn_id, conn_type=conn.conn_type, host=conn.host, password=conn.password, extra=json.dumps(extra)
    ).as_json()


def rotate_app_secret(env: ReceiptsEnv, app_secret: str) -> None:
    """Meta signs webhooks with ``app_secret`` from now on (the stand-in's webhook wiring)."""
    wiring = requests.get(f"{env.whatsapp}/_control/webhook", timeout=5).json()
    body = {"queue_url": wiring["queue_url"], "sqs_endpoint": wiring["sqs_endpoint"], "app_secret": app_secret}
    requests.post(f"{env.whatsapp}/_control/webhook", json=body, timeout=5).raise_for_status()


def digits(e164: str) -> str:
    return e164.lstrip("+")


__all__ = [
    "ReceiptsEnv", "clients", "digits", "rotate_app_secret", "run", "status", "summary_of", "whatsapp_connection_with",
]  # fmt: skip
