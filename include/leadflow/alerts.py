"""Failure alerting: one alert per final failure, never per retry.

Airflow calls ``on_failure_callback`` only when a task has no retries left (retries go to
``on_retry_callback``), so attaching :class:`FailureAlert` there gives exactly one alert per
failed task. The alert goes to the SNS topic in Variable ``leadflow_alerts_sns_topic_arn``
(through the amazon provider's SNS hook) and, when Variable ``leadflow_alerts_slack_webhook_url``
is set, to that Slack incoming webhook. It names the DAG, task, run, try number, error class and
the log URL, and never the error message itself, which may carry a phone number or a token.

Airflow 3.3.1 can call the failure callback **twice** for one failure: a task whose worker died
is failed by the scheduler's heartbeat-timeout check, which requests the callback, and again when
the executor's "failed" event for it is processed while the task instance is still ``running``
(apache/airflow#68008, merged upstream after 3.3.1; ``make chaos`` seed 5 saw two alerts for one
``process_messages``). So each failure is claimed once in MongoDB (``failure_alerts``, keyed by
DAG, run, task and try) before it is published; the second call finds the claim and stays
quiet. If MongoDB cannot be reached the alert goes out anyway: two alerts beat none.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseNotifier

from leadflow.config import AWS_CONN_ID, VAR_ALERTS_SNS_TOPIC

log = logging.getLogger(__name__)
VAR_SLACK_WEBHOOK = "leadflow_alerts_slack_webhook_url"


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=None) or None


def publish_alert(subject: str, lines: dict[str, Any], aws_conn_id: str = AWS_CONN_ID) -> bool:
    """Publish one alert to SNS (and Slack if configured). Returns whether anything was sent."""
    from leadflow.timefmt import now_ist

    lines = {**lines, "alerted_at": now_ist()}  # IST with its offset, as the team reads times
    body = json.dumps(lines, default=str, indent=1)
    sent = False
    topic = _variable(VAR_ALERTS_SNS_TOPIC)
    if topic:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        SnsHook(aws_conn_id=aws_conn_id).publish_to_target(
            target_arn=topic, message=body, subject=subject[:99]
        )
        sent = True
    webhook = _variable(VAR_SLACK_WEBHOOK)
    if webhook:
        import requests

        text = subject + "\n" + "\n".join(f"• {k}: {v}" for k, v in lines.items())
        requests.post(webhook, json={"text": text}, timeout=10).raise_for_status()
        sent = True
    if not sent:
        log.warning("No alert channel configured (Variable %s is unset): %s", VAR_ALERTS_SNS_TOPIC, subject)
    return sent


class FailureAlert(BaseNotifier):
    """Task failure notifier (use as ``on_failure_callback``)."""

    def notify(self, context: dict[str, Any]) -> None:
        ti = context["ti"]
        exception = context.get("exception")
        error_class = type(exception).__name__ if exception is not None else "unknown"
        dag_id = ti.dag_id
        lines = {
            "dag": dag_id,
            "task": ti.task_id,
            "run": ti.run_id,
            "try_number": ti.try_number,
            "error_class": error_class,
            "log_url": ti.log_url,
        }
        # Fields an exception chose to expose (codes, counts), never its message.
        extra = getattr(exception, "alert_fields", None)
        if isinstance(extra, dict):
            lines.update({k: v for k, v in extra.items() if k not in lines})
        code = f", code {extra['error_code']}" if isinstance(extra, dict) and extra.get("error_code") else ""
        if not first_call_for(ti):
            log.info("Failure of %s.%s [%s] try %s is already alerted", dag_id, ti.task_id, ti.run_id, ti.try_number)
            return
        publish_alert(f"[leadflow] {dag_id}.{ti.task_id} failed ({error_class}{code})", lines)


def first_call_for(ti: Any) -> bool:
    """Claim the alert of this try's failure: True for the first caller (and whenever MongoDB
    cannot answer), False for any later one."""
    from pymongo.errors import DuplicateKeyError

    from leadflow.config import FAILURE_ALERTS
    from leadflow.mongo import get_database

    key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}/{ti.try_number}"
    try:
        get_database()[FAILURE_ALERTS].insert_one({"_id": key, "alerted_at": datetime.now(UTC)})
    except DuplicateKeyError:
        return False
    except Exception:  # MongoDB away (perhaps the very failure): alert regardless
        log.warning("Could not record the failure alert of %s; sending it anyway", key, exc_info=True)
    return True
