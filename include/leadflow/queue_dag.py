"""What the continuous, SQS-driven DAGs share: their DAG arguments and their batch sensor.

``whatsapp_statuses`` builds on these; ``whatsapp_followups`` spells the same out in its own file
and can switch to them (same values).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from leadflow.config import AWS_CONN_ID
from leadflow.dag_defaults import default_args


def continuous_dag_args(*, max_wait_seconds: int, what: str) -> dict[str, Any]:
    """``@dag`` arguments for ``schedule="@continuous"``: one active run (always exactly one consumer
    of the queue, so a message is never processed by two runs at once), and the ``max_wait_seconds`` param."""
    from airflow.sdk import Param

    return {
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "catchup": False,
        "max_active_runs": 1,
        "dagrun_timeout": timedelta(hours=1),
        "default_args": default_args(),
        "params": {
            "max_wait_seconds": Param(
                max_wait_seconds,
                type="integer",
                minimum=1,
                maximum=3600,
                description=f"How long a run waits for its first {what} before ending skipped.",
            )
        },
    }


def batch_sensor(
    *,
    task_id: str,
    task_display_name: str,
    queue_url_variable: str,
    settings: Any,
    timeout_grace_seconds: int = 120,
    **extra: Any,
) -> Any:
    """The deferred receive (nothing deleted on reception; batch to object storage). ``settings``
    is a ``dag_settings`` module with the ``SENSOR_*`` and ``VISIBILITY_TIMEOUT_S`` names."""
    from leadflow.followups.sensor import FollowupsSqsSensor

    return FollowupsSqsSensor(
        task_id=task_id,
        task_display_name=task_display_name,
        sqs_queue="{{ var.value." + queue_url_variable + " }}",
        aws_conn_id=AWS_CONN_ID,
        max_messages=settings.SENSOR_MAX_MESSAGES,
        num_batches=settings.SENSOR_NUM_BATCHES,
        wait_time_seconds=settings.SENSOR_WAIT_TIME_SECONDS,
        visibility_timeout=settings.VISIBILITY_TIMEOUT_S,
        delete_message_on_reception=False,
        deferrable=True,
        poke_interval=settings.SENSOR_POKE_INTERVAL_SECONDS,
        max_wait_seconds="{{ params.max_wait_seconds }}",
        timeout=settings.SENSOR_MAX_WAIT_SECONDS + timeout_grace_seconds,
        # Only the deferral's hard timeout is softened to "skipped"; SQS errors still fail.
        soft_fail=True,
        **extra,
    )
