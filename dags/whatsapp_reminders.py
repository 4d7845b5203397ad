"""
### WhatsApp site-visit reminders

Sends the site-visit reminders queued on `leadflow-reminders` (Variable
`leadflow_reminders_queue_url`; the planner puts every reminder there), exactly as
`whatsapp_followups` sends the nudges, with the same ledger (`followup_deliveries`), the same
templates and the same alerts, but its own queue, DLQ (`leadflow-reminders-dlq`) and consumer:
a reminder never waits behind a backlog of nudges, not even behind a run busy with 200 of them.

**On time.** A reminder is due 15 minutes before the visit (SQS releases it then). Its ledger
document carries `deadline_at`, and `late_seconds` when it went out after it. Sent more than
2 minutes late, or not sent before the visit started (`state: skipped`, `reason: expired`):
counted in the run summary (`reminders_late`, `reminders_expired`, with their event ids) and
alerted by `alert_on_problems`. It sends at up to 10 msg/s of the business number's 80; the
nudges' consumer uses at most the other 70.

**Outages.** An account-level WhatsApp error (token, payment, permissions, block) stops the run
and alerts, as in `whatsapp_followups`; the unsent reminders are put back as fresh copies every
5 minutes (so SQS never dead-letters them, however long the outage) and go out once the cause
is fixed, or are counted and alerted as expired if their visit started meanwhile.

Redrive its DLQ with `followups_redrive` and `queue` = `reminders`.
"""

from __future__ import annotations

from airflow.sdk import dag

from leadflow.config import VAR_REMINDERS_QUEUE_URL
from leadflow.followups import dag_settings
from leadflow.followups.dag_settings import (
    REMINDERS_BATCH_PREFIX,
    REMINDERS_DAG_ID,
    SENSOR_MAX_WAIT_SECONDS,
    SENSOR_TIMEOUT_GRACE_SECONDS,
)
from leadflow.queue_dag import batch_sensor, batch_tasks, continuous_dag_args


@dag(
    dag_id=REMINDERS_DAG_ID,
    # Continuous with one active run: exactly one consumer of the reminders' queue, waiting in a
    # deferred long poll (no worker slot), which returns as soon as a reminder becomes visible.
    schedule="@continuous",
    **continuous_dag_args(max_wait_seconds=SENSOR_MAX_WAIT_SECONDS, what="reminder"),
    tags=["leadflow", "whatsapp", "followups", "sqs"],
    doc_md=__doc__,
)
def whatsapp_reminders():
    receive = batch_sensor(
        task_id="receive_messages",
        task_display_name="Wait for site-visit reminders (SQS)",
        queue_url_variable=VAR_REMINDERS_QUEUE_URL,
        settings=dag_settings,
        timeout_grace_seconds=SENSOR_TIMEOUT_GRACE_SECONDS,
        batch_prefix=REMINDERS_BATCH_PREFIX,
    )
    batch_tasks(
        receive,
        tasks_module="leadflow.followups.reminder_tasks",
        process_task_id="process_messages",
        process_display_name="Personalise and send reminders",
        alert_display_name="Alert on late reminders and dead letters",
        settings=dag_settings,
    )


whatsapp_reminders()
