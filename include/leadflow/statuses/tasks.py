"""The bodies of the ``whatsapp_statuses`` tasks (the DAG file only wires them together)."""

from __future__ import annotations

import logging
from typing import Any

from leadflow.statuses.dag_settings import DAG_ID

log = logging.getLogger(__name__)


class StatusesBatchError(RuntimeError):
    """The batch left receipts unapplied for a reason that needs a person; fail the task (one alert)."""


def app_secret(conn_id: str | None = None) -> str:
    from airflow.sdk import BaseHook

    from leadflow.config import WHATSAPP_CONN_ID
    from leadflow.statuses.dag_settings import APP_SECRET_EXTRA

    conn_id = conn_id or WHATSAPP_CONN_ID
    secret = BaseHook.get_connection(conn_id).extra_dejson.get(APP_SECRET_EXTRA)
    if not secret:
        # Without it no receipt can be trusted; dead-lettering them all would be worse than waiting.
        raise StatusesBatchError(
            f"connection {conn_id!r} has no extra {APP_SECRET_EXTRA!r}; receipts left in the queue"
        )
    return str(secret)


def build_processor() -> Any:
    """A processor wired to the Airflow connections and Variables (Mongo, AWS, WhatsApp)."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Variable

    from leadflow.config import AWS_CONN_ID, DELIVERIES, VAR_WHATSAPP_TEMPLATES
    from leadflow.messaging.queue_actions import QueueActions
    from leadflow.messaging.templates import TemplateConfig
    from leadflow.messaging.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
    from leadflow.mongo import get_database
    from leadflow.statuses.dag_settings import (
        PROCESS_BUDGET_SECONDS,
        REDELIVERY_DELAY_SECONDS,
        VAR_STATUSES_DLQ_URL,
        VAR_STATUSES_QUEUE_URL,
    )
    from leadflow.statuses.delivery import DeliveryLedger
    from leadflow.statuses.meta_events import MetaEvents
    from leadflow.statuses.processor import StatusesProcessor
    from leadflow.statuses.resend import Resender

    secret = app_secret()
    db = get_database()
    ledger = DeliveryLedger(db[DELIVERIES])
    queue = QueueActions(
        SqsHook(aws_conn_id=AWS_CONN_ID).conn,
        queue_url=Variable.get(VAR_STATUSES_QUEUE_URL),
        dlq_url=Variable.get(VAR_STATUSES_DLQ_URL),
        redelivery_delay_seconds=REDELIVERY_DELAY_SECONDS,
    )
    # One attempt: a resend that may have reached WhatsApp is never repeated blind.
    whatsapp = WhatsAppClient(WhatsAppConfig.from_connection(), retry=RetryPolicy(attempts=1), pool_size=2)
    templates = TemplateConfig.parse(Variable.get(VAR_WHATSAPP_TEMPLATES, default=None))
    return StatusesProcessor(
        ledger=ledger,
        queue=queue,
        resender=Resender(ledger, whatsapp, templates),
        app_secret=secret,
        budget_seconds=PROCESS_BUDGET_SECONDS,
        meta=MetaEvents.from_airflow(db),
    )


def process_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Apply the stored batch of webhooks; return the summary (counts and ids only)."""
    from leadflow.messaging.batch_store import read_batch

    messages = read_batch(batch["batch_path"])
    processor = build_processor()
    try:
        summary = processor.process(messages)
    finally:
        processor.resender.whatsapp.close()
    result = summary.as_dict()
    if processor.meta is not None:  # pricing per category, marketing holds, template categories
        from leadflow.statuses.meta_events import publish_template_alert

        result.update(processor.meta.summary())
        publish_template_alert(result["template_category_updates"], processor.resender.templates.templates, DAG_ID)
    log.info("Receipts batch summary: %s", result)
    if summary.fatal_error:
        raise StatusesBatchError(f"{summary.fatal_error}; the affected receipts were left for redelivery")
    if summary.errors:
        raise StatusesBatchError(f"{summary.errors} webhook(s) could not be applied and were left for redelivery")
    return result


def alert_on_problems(summary: dict[str, Any], run_id: str) -> bool:
    """One alert per run that saw failed deliveries, failed/uncertain resends or forged webhooks."""
    from leadflow.alerts import publish_alert

    failed, dead = int(summary.get("failed", 0)), int(summary.get("dead_lettered", 0))
    resends = summary.get("resends") or {}
    uncertain = int(resends.get("unknown_outcome", 0))
    if not failed and not dead and not uncertain:
        return False
    lines = {
        "dag": DAG_ID,
        "run": run_id,
        "receipts": summary.get("receipts"),
        "failed_deliveries": failed,
        "failure_codes": summary.get("failure_codes"),
        "resends": resends,
        "dead_lettered_webhooks": dead,
        "dead_letter_reasons": summary.get("dead_letter_reasons"),
        "event_ids": summary.get("problem_event_ids"),
        "where": "followup_deliveries has each event's delivery; leadflow-whatsapp-statuses-dlq the rejected webhooks",
    }
    subject = f"[leadflow] {DAG_ID}: {failed} failed deliveries, {dead} rejected webhooks"
    return publish_alert(subject, lines)
