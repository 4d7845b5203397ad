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
        # Fresh copies (leadflow.followups.requeue): SQS never dead-letters them for the outage.
        "requeued": summary.get("requeued"),
        # A reminder that expired (or went late) before the stop is alerted here: this failure
        # skips alert_on_problems.
        **{key: summary.get(key) for key in REMINDER_ALERT_KEYS if summary.get(key)},
        "dead_lettered": summary.get("dead_lettered"),
    }
    return error


REMINDER_ALERT_KEYS = ("reminders_late", "reminders_expired", "late_event_ids", "expired_event_ids")

ACCOUNT_ERROR_MEANINGS = {
    "190": "access token expired or invalid: renew the whatsapp_default password",
    "http_401": "access token rejected: renew the whatsapp_default password",
    "131042": "business payment problem: fix the payment method in WhatsApp Manager",
    "132001": "template missing or not approved: check leadflow_whatsapp_templates against WhatsApp Manager",
    "132015": "a template is paused for low quality: edit it in WhatsApp Manager or switch the event type's "
    "template in leadflow_whatsapp_templates",
    "132016": "a template is disabled (paused too often): create a new one and put it in leadflow_whatsapp_templates",
    "no_template": "no template configured for an event type in leadflow_whatsapp_templates",
    "10": "permission missing on the app or token",
    "200": "permission missing on the app or token",
    "368": "the business number is temporarily blocked for policy violations",
    "131031": "the business account is locked",
}


def process_batch(batch: dict[str, Any], *, reminders: bool = False, dag_id: str = DAG_ID) -> dict[str, Any]:
    """Process the stored batch; return the summary (counts and ids only). ``reminders``: the
    batch came from the reminders' queue (its settings, see :func:`.settings.load_settings`)."""
    from leadflow.followups.processor import build_processor
    from leadflow.followups.settings import load_settings
    from leadflow.messaging.batch_store import read_batch

    messages = read_batch(batch["batch_path"])
    processor = build_processor(load_settings(reminders=reminders))
    try:
        summary = processor.process(messages)
    finally:
        processor.whatsapp.close()
    result = summary.as_dict()
    from leadflow.followups.openai_usage import publish_budget_alert, publish_quota_alert  # openai_usage hook

    result.update(processor.personaliser.usage.summary() if processor.personaliser.usage else {})
    publish_budget_alert(processor.personaliser.usage, dag_id)
    publish_quota_alert(processor.personaliser.usage, dag_id)
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


VAR_FALLBACK_ALERT_RATE = "leadflow_followup_fallback_alert_rate"
DEFAULT_FALLBACK_ALERT_RATE = 0.2


def fallback_alert_rate(raw: Any) -> float:
    """The Variable as a share in [0, 1]; ``20`` and ``"20%"`` mean 20 % too."""
    try:
        rate = float(str(raw).strip().rstrip("%"))
    except (TypeError, ValueError):
        return DEFAULT_FALLBACK_ALERT_RATE
    return rate / 100 if rate > 1 else max(rate, 0.0)


def too_many_fallbacks(summary: dict[str, Any], threshold: float) -> bool:
    """More of this run's texts are the template fallback than ``threshold`` allows.

    A fallback is not a success: a model the account cannot use, parameters the model rejects or
    an exhausted quota turn *every* message into a fallback, which would otherwise pass quietly.
    """
    generated, fallbacks = int(summary.get("texts_generated") or 0), int(summary.get("fallbacks") or 0)
    return bool(generated and fallbacks) and fallbacks / generated > threshold


def alert_on_problems(summary: dict[str, Any], run_id: str, dag_id: str = DAG_ID) -> bool:
    """One alert per run that found dead letters or permanent send failures no alert named yet,
    sent a reminder late or let one expire (see :mod:`.deadlines`), or whose fallback rate passed
    ``leadflow_followup_fallback_alert_rate`` (default 20 %).

    Dead letters and failures come from the delivery ledger, not the summary: a try of
    ``process_messages`` killed after dead-lettering leaves them in no summary
    (:mod:`leadflow.messaging.alert_claims`). Late/expired reminders and fallbacks are the run's own.
    """
    from airflow.sdk import Variable

    from leadflow.alerts import publish_alert
    from leadflow.config import DELIVERIES
    from leadflow.messaging.alert_claims import claim_problems, mark_published
    from leadflow.mongo import get_database

    deliveries, claimant = get_database()[DELIVERIES], f"{dag_id}/{run_id}"
    claimed = claim_problems(deliveries, claimant)
    dead_lettered, failed = claimed.dead_lettered, claimed.failed
    threshold = fallback_alert_rate(Variable.get(VAR_FALLBACK_ALERT_RATE, default=DEFAULT_FALLBACK_ALERT_RATE))
    fallbacks_alarming = too_many_fallbacks(summary, threshold)
    late, expired = int(summary.get("reminders_late", 0)), int(summary.get("reminders_expired", 0))
    if not dead_lettered and not failed and not late and not expired and not fallbacks_alarming:
        return False
    problems = [f"{dead_lettered} dead-lettered", f"{failed} failed"] if dead_lettered or failed else []
    if fallbacks_alarming:
        rate = f"{summary.get('fallbacks')}/{summary.get('texts_generated')}"
        problems.append(f"fallback rate {rate} over {threshold:.0%}")
    lines = {
        "dag": dag_id,
        "run": run_id,
        "received": summary.get("received"),
        "sent": summary.get("sent"),
        "dead_lettered": dead_lettered,
        "failed": failed,
        "dead_letter_reasons": dict(claimed.dead_letter_reasons),
        "failure_codes": dict(claimed.failure_codes),
        "event_ids": claimed.event_ids,
        "texts_generated": summary.get("texts_generated"),
        "fallbacks": summary.get("fallbacks"),
        "fallback_reasons": summary.get("fallback_reasons"),
        "fallback_alert_rate": threshold,
        "where": "DLQ messages carry a 'reason' attribute; followup_deliveries has each event's outcome "
        "(fallback_reason for template texts; alerted_by names the alert that reported a problem)",
    }
    # SNS keeps 99 characters of a subject: name only what happened (the body has every count).
    problems += [f"{late} late reminder(s)"] if late else []
    problems += [f"{expired} expired reminder(s)"] if expired else []
    subject = f"[leadflow] {dag_id}: " + ", ".join(problems)
    if late or expired:
        lines.update({key: summary.get(key) for key in REMINDER_ALERT_KEYS})
        lines["reminder_late_seconds_max"] = summary.get("reminder_late_seconds_max")
    published = publish_alert(subject, lines)
    mark_published(deliveries, claimant)
    return published


def cleanup_batch(batch: dict[str, Any] | None, run_id: str | None = None, prefix: str | None = None) -> bool:
    """Delete the run's batch objects (they hold message bodies): every try's, by the run's prefix,
    and the one the XCom names; True if anything was deleted."""
    from leadflow.messaging.batch_store import delete_batch, delete_run_batches

    deleted = delete_run_batches(run_id, prefix) if run_id and prefix else 0
    if batch and batch.get("batch_path"):
        deleted += int(delete_batch(batch["batch_path"]))
    return deleted > 0
