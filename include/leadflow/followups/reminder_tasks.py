"""The ``whatsapp_reminders`` tasks: the follow-ups' tasks on the reminders' queue pair.

:func:`leadflow.queue_dag.batch_tasks` calls a module's ``process_batch(batch)`` and
``alert_on_problems(summary, run_id)``; these bind the reminders' settings and DAG id.
"""

from __future__ import annotations

from typing import Any

from leadflow.followups import tasks
from leadflow.followups.dag_settings import REMINDERS_DAG_ID


def process_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return tasks.process_batch(batch, reminders=True, dag_id=REMINDERS_DAG_ID)


def alert_on_problems(summary: dict[str, Any], run_id: str) -> bool:
    return tasks.alert_on_problems(summary, run_id, dag_id=REMINDERS_DAG_ID)
