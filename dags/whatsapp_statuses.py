"""
### WhatsApp delivery receipts

Reads Meta's `statuses` webhooks from the SQS queue `leadflow-whatsapp-statuses` (Variable
`leadflow_whatsapp_statuses_queue_url`; API Gateway puts each webhook POST there, see `deploy/`)
and records, per follow-up event in MongoDB `leadflow.followup_deliveries`, what happened to the
message after WhatsApp accepted it.

**How a run works**

1. `receive_messages` waits (deferred, no worker slot) for webhooks, with their `signature`
   attribute (the `X-Hub-Signature-256` header). Nothing is deleted here; the batch goes to object
   storage and XCom holds only its path. No webhook within 10 minutes → the run ends **skipped**.
2. `apply_receipts`, per webhook: check the HMAC-SHA256 signature with the `whatsapp_default`
   extra `app_secret` (bad or missing → `leadflow-whatsapp-statuses-dlq` with a `reason`), then
   per receipt (matched by `biz_opaque_callback_data` = event id, else by wamid):
   * `delivery` moves forward only: sent → delivered → read (or failed); repeated and
     out-of-order receipts never move it back. Each status keeps its first timestamp.
   * a receipt for an event in `unknown_outcome` (the send's answer was lost) marks it `sent`.
   * `failed` 131047 (the 24-hour window had closed) → the approved template is sent **once**
     (`resend` on the event); any other failure → `state: failed`, `reason: delivery_failed`;
     131049 / 131050 also hold marketing to that buyer (`leadflow.marketing`).
   * the first receipt's `pricing` is stored as `delivery.pricing`; the return value counts
     messages and estimated cost per category (Variable `leadflow_whatsapp_price_per_message`).
   * `template_category_update` webhooks are stored in `whatsapp_template_events` and alerted once.
   The webhook is deleted only after all its receipts are recorded.
3. `alert_on_problems`: one alert per run with the failure counts and codes, rejected webhooks
   and uncertain resends.
4. `cleanup_batch` deletes the batch object.

A resend hitting an account-level error (131042 payment, 132001 template, 10/200 permission,
190 token, 368/131031 blocked) or a missing template configuration leaves its webhook in the
queue and fails the run once; fix the account and the next delivery resends it.
"""

from __future__ import annotations

from airflow.sdk import dag

from leadflow.queue_dag import batch_sensor, batch_tasks, continuous_dag_args
from leadflow.statuses import dag_settings
from leadflow.statuses.dag_settings import (
    BATCH_PREFIX,
    DAG_ID,
    SENSOR_MAX_WAIT_SECONDS,
    SIGNATURE_ATTRIBUTE,
    VAR_STATUSES_QUEUE_URL,
)


@dag(
    dag_id=DAG_ID,
    # Continuous: each run idles in a deferred long poll (no worker slot), the next starts at once.
    schedule="@continuous",
    **continuous_dag_args(max_wait_seconds=SENSOR_MAX_WAIT_SECONDS, what="webhook"),
    tags=["leadflow", "whatsapp", "receipts", "sqs"],
    doc_md=__doc__,
)
def whatsapp_statuses():
    receive = batch_sensor(
        task_id="receive_messages",
        task_display_name="Wait for delivery receipts (SQS)",
        queue_url_variable=VAR_STATUSES_QUEUE_URL,
        settings=dag_settings,
        message_attribute_names=[SIGNATURE_ATTRIBUTE],
        batch_prefix=BATCH_PREFIX,
    )
    batch_tasks(
        receive,
        tasks_module="leadflow.statuses.tasks",
        process_task_id="apply_receipts",
        process_display_name="Verify and apply receipts",
        alert_display_name="Alert on failed deliveries",
        settings=dag_settings,
    )


whatsapp_statuses()
