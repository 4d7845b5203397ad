"""What the continuous, SQS-driven DAGs share: their DAG arguments, their batch sensor and the
tasks after it (process → alert, then delete the batch object).

``whatsapp_followups`` and ``whatsapp_statuses`` are built from these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import import_module
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
    from leadflow.messaging.sensor import FollowupsSqsSensor

    extra.setdefault("batch_prefix", settings.BATCH_PREFIX)

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


def batch_tasks(
    receive: Any,
    *,
    tasks_module: str,
    process_task_id: str,
    process_display_name: str,
    alert_display_name: str,
    settings: Any,
) -> None:
    """Inside a ``@dag`` function: ``receive`` → process → ``alert_on_problems``, and ``cleanup_batch``
    once processing is over, whatever its outcome (also after a quiet run: a trigger whose event
    was discarded may have written a batch); it deletes the run's objects by prefix.
    ``tasks_module`` names the module holding ``process_batch(batch)`` and
    ``alert_on_problems(summary, run_id)``, imported inside the task (by name, so parsing the DAG
    file imports none of it); ``settings`` is the DAG's ``dag_settings`` module (``PROCESS_*``)."""
    from airflow.sdk import TriggerRule, task

    @task(
        multiple_outputs=False,
        task_id=process_task_id,
        task_display_name=process_display_name,
        retries=settings.PROCESS_RETRIES,
        retry_delay=settings.PROCESS_RETRY_DELAY,
        execution_timeout=settings.PROCESS_EXECUTION_TIMEOUT,
    )
    def process(batch: dict) -> dict:
        return import_module(tasks_module).process_batch(batch)

    @task(task_display_name=alert_display_name, retries=2, retry_delay=timedelta(seconds=15))
    def alert_on_problems(summary: dict, run_id: str | None = None) -> bool:
        return import_module(tasks_module).alert_on_problems(summary, run_id or "")

    @task(
        task_display_name="Delete the batch object",
        trigger_rule=TriggerRule.ALL_DONE,
        retries=2,
        retry_delay=timedelta(seconds=15),
    )
    def cleanup_batch(ti=None) -> bool:
        from leadflow.followups.tasks import cleanup_batch as cleanup

        return cleanup(ti.xcom_pull(task_ids=receive.task_id), ti.run_id, receive.batch_prefix)

    summary = process(receive.output)
    alert_on_problems(summary)
    summary >> cleanup_batch()
