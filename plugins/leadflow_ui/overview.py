"""The Leadflow page's content, as one JSON-able dict (the page renders it, ``/api/overview`` returns it)."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from leadflow.config import AWS_CONN_ID
from leadflow.followups.openai_usage import VAR_DAILY_TOKEN_BUDGET, VAR_PRICES, parse_budget, parse_prices
from leadflow.messaging.redrive import queue_variables
from leadflow.reports.freshness import DEFAULT_FRESHNESS_MINUTES, VAR_FRESHNESS_MINUTES
from leadflow.timefmt import ist
from leadflow_ui import airflow_state, ledger_stats

log = logging.getLogger(__name__)

REDRIVE_DAG_ID = "followups_redrive"
DLQ_QUEUES = ("followups", "statuses")
DEPTH_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def _variable(key: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(key, default=None)


@functools.cache
def _database() -> Any:
    # One client per api-server process (MongoClient pools its connections); the DAGs' own accessor.
    from leadflow.mongo import get_database

    return get_database()


@functools.cache
def _sqs() -> Any:
    # Building the hook's boto3 client costs ~0.25 s: once per api-server process, not per view.
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return SqsHook(aws_conn_id=AWS_CONN_ID).conn


def dlq_depths() -> list[dict[str, Any]]:
    """Each DLQ's depth as SQS reports it (GetQueueAttributes: reads, never receives)."""
    from airflow.exceptions import AirflowNotFoundException
    from botocore.exceptions import BotoCoreError, ClientError

    depths = []
    for queue in DLQ_QUEUES:
        row: dict[str, Any] = {"queue": queue, "visible": None, "in_flight": None, "error": None}
        url = _variable(queue_variables(queue)[1])
        if not url:
            row["error"] = "queue URL Variable not set"
        else:
            try:
                attributes = _sqs().get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES)["Attributes"]
                row["visible"] = int(attributes["ApproximateNumberOfMessages"])
                row["in_flight"] = int(attributes["ApproximateNumberOfMessagesNotVisible"])
            except (BotoCoreError, ClientError, AirflowNotFoundException) as error:  # the rest still shows
                log.warning("DLQ depth of %s unavailable: %s", queue, type(error).__name__)
                row["error"] = type(error).__name__
        depths.append(row)
    return depths


def redrive_conf(reason: str, count: int) -> dict[str, Any]:
    """``followups_redrive``'s params for one reason, as a dry run."""
    return {"queue": "followups", "reasons": [reason], "max_messages": max(count, 1), "dry_run": True}


def build(session: Session, dag_ids: list[str], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    db = _database()
    freshness = timedelta(minutes=int(_variable(VAR_FRESHNESS_MINUTES) or DEFAULT_FRESHNESS_MINUTES))
    days = ledger_stats.day_stats(db, now, parse_prices(_variable(VAR_PRICES)))
    dead_letters = ledger_stats.dead_letters_by_reason(db, now)
    return {
        "generated_at": ist(now),
        "days": [day.as_dict() for day in days],
        "openai_daily_token_budget": parse_budget(_variable(VAR_DAILY_TOKEN_BUDGET)),
        "dlq": {
            "depths": dlq_depths(),
            "by_reason": [
                {"reason": reason, "events": count, "redrive_conf": redrive_conf(reason, count)}
                for reason, count in dead_letters.items()
            ],
            "redrive_dag_id": REDRIVE_DAG_ID,
        },
        "report_hours": [
            vars(hour) for hour in airflow_state.report_hours(session, ledger_stats.ist_days(now)[0], now, freshness)
        ],
        "freshness_minutes": int(freshness.total_seconds() // 60),
        "runs": airflow_state.last_runs(session, dag_ids),
    }
