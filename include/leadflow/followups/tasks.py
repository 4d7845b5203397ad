"""The bodies of the ``whatsapp_followups`` tasks (the DAG file only wires them together)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from leadflow.followups.dag_settings import DAG_ID

log = logging.getLogger(__name__)


class FollowupBatchError(RuntimeError):
    """The batch hit errors no message-level handling covers; fail the task so it alerts."""


class AccountLevelError(AirflowFailException):
    """Fails the task at once, no retries: a retry would only hit the same account problem.

    ``alert_fields`` go into the one failure alert (:class:`leadflow.alerts.FailureAlert`):
    the code and counts only, never an error text.
    """

    alert_fields: dict[str, Any]


def _account_level_error(code: str, summary: dict[str, Any]) -> AccountLevelError:
    error = AccountLevelError(
        f"WhatsApp account-level error {code}: the batch was stopped and every unsent message left in the queue"
    )
    error.alert_fields = {
        "error_code": code,
        "meaning": ACCOUNT_ERROR_MEANINGS.get(code, "account-level WhatsApp error"),
        "sent_before_stop": summary.get("sent"),
        "left_in_queue": summary.get("left_for_redelivery"),
        "dead_lettered": summary.get("dead_lettered"),
    }
    return error


ACCOUNT_ERROR_MEANINGS = {
    "190": "access token expired or invalid: renew the whatsapp_default password",
    "http_401": "access token rejected: renew the whatsapp_default password",
    "131042": "business payment problem: fix the payment method in WhatsApp Manager",
    "132001": "template missing or not approved: check leadflow_whatsapp_templates against WhatsApp Manager",
    "no_template": "no template configured for an event type in leadflow_whatsapp_templates",
    "10": "permission missing on the app or token",
    "200": "permission missing on the app or token",
    "368": "the business number is temporarily blocked for policy violations",
    "131031": "the business account is locked",
}


def process_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Process the stored batch; return the summary (counts and ids only)."""
    from leadflow.followups.processor import build_processor
    from leadflow.messaging.batch_store import read_batch

    messages = read_batch(batch["batch_path"])
    processor = build_processor()
    try:
        summary = processor.process(messages)
    finally:
        processor.whatsapp.close()
    result = summary.as_dict()
    from leadflow.followups.openai_usage import publish_budget_alert  # openai_usage hook (3 lines)

    result.update(processor.personaliser.usage.summary() if processor.personaliser.usage else {})
    publish_budget_alert(processor.personaliser.usage, DAG_ID)
    log.info("Follow-up batch summary: %s", result)
    if summary.account_error_code:
        raise _account_level_error(summary.account_error_code, result)
    if summary.fatal_error:
        raise FollowupBatchError(f"{summary.fatal_error}; the batch's messages were left for redelivery")
    if summary.errors:
        raise FollowupBatchError(
            f"{summary.errors} message(s) hit unexpected errors and were left for redelivery (see the log)"
        )
    return result


def alert_on_problems(summary: dict[str, Any], run_id: str) -> bool:
    """One alert per run that dead-lettered messages or had permanent send failures."""
    from leadflow.alerts import publish_alert

    dead_lettered, failed = int(summary.get("dead_lettered", 0)), int(summary.get("failed", 0))
    if not dead_lettered and not failed:
        return False
    lines = {
        "dag": DAG_ID,
        "run": run_id,
        "received": summary.get("received"),
        "sent": summary.get("sent"),
        "dead_lettered": dead_lettered,
        "failed": failed,
        "dead_letter_reasons": summary.get("dead_letter_reasons"),
        "failure_codes": summary.get("failure_codes"),
        "event_ids": summary.get("problem_event_ids"),
        "where": "DLQ messages carry a 'reason' attribute; followup_deliveries has each event's outcome",
    }
    subject = f"[leadflow] {DAG_ID}: {dead_lettered} dead-lettered, {failed} failed"
    return publish_alert(subject, lines)


def cleanup_batch(batch: dict[str, Any] | None, run_id: str | None = None, prefix: str | None = None) -> bool:
    """Delete the run's batch objects (they hold message bodies): every try's, by the run's prefix,
    and the one the XCom names; True if anything was deleted."""
    from leadflow.messaging.batch_store import delete_batch, delete_run_batches

    deleted = delete_run_batches(run_id, prefix) if run_id and prefix else 0
    if batch and batch.get("batch_path"):
        deleted += int(delete_batch(batch["batch_path"]))
    return deleted > 0
