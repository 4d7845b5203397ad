"""
### WhatsApp follow-ups

Sends buyers a personalised WhatsApp follow-up (cost-sheet follow-up, inquiry follow-up, or any
event type another producer puts here) for every event that lands on the SQS queue
`leadflow-followups` (Variable `leadflow_followups_queue_url`), **at most once per `event_id`**.
Site-visit reminders have their own queue and DAG, `whatsapp_reminders`, so they never wait
behind these.

**How a run works**

1. `receive_messages` waits (deferred, no worker slot) for messages: long polling, up to 10 per
   receive and 20 receives per run (≤ 200 messages). Messages are *not* deleted here. The
   trigger writes the batch to object storage (Variable `leadflow_object_store_base`); the
   trigger event, `next_kwargs` and XCom only hold its path, the count and the SQS message ids.
   No message within 10 minutes → the run ends **skipped** (a quiet run: no failure, no alert)
   and the next one starts.
2. `process_messages` handles the batch concurrently (Variable `leadflow_followup_concurrency`,
   default and cap 96, kept within the visibility-timeout budget; global send rate
   `leadflow_followup_send_rate_per_second`, 1–80; one buyer's messages go one after another
   on one thread, never two within 6 s). Per
   message: validate → ledger check → load the user → is a reminder still valid (not past, not
   cancelled or moved) → opt-in → E.164 number → text from OpenAI (model in
   `leadflow_openai_model`; a fixed template text if OpenAI fails or writes something unusable)
   → WhatsApp: free-form text (or the media with the text as caption) if the buyer wrote to us
   in the last 24 h, else the approved template (`leadflow_whatsapp_templates`).
   Each message is deleted from the queue only after its outcome is in the ledger.
3. `alert_on_problems` sends one alert (SNS `leadflow_alerts_sns_topic_arn`) when the ledger
   holds dead letters or permanent send failures no alert has named yet (this run's, or those of
   a try whose worker died), with counts, reasons and event ids,
   or when more of its texts than `leadflow_followup_fallback_alert_rate` (default 0.2) were the
   template fallback (a fallback is not a success: a model switch or an outage shows here).
   (A failed `process_messages` alerts by itself, once, and this task is then skipped.)
4. `cleanup_batch` deletes the batch object (it holds the message bodies).

**Where to look**

* MongoDB `leadflow.followup_deliveries`, one document per `event_id`; `state` is one of
  * `sent` (with `wamid`; `confirmed_by` `response` or `receipt`): final, never sent again;
  * `unknown_outcome`: the request may have reached WhatsApp (read timeout, connection lost,
    a 5xx without an error body). A delivery receipt marks it `sent`; without one within
    `leadflow_followup_unknown_outcome_grace_minutes` (15) the next delivery sends it once more
    (the message waits as a fresh delayed copy: the wait spends none of its SQS receives);
  * `skipped` (`reason`: `opted_out`, `opt_in_unreadable`, `expired` = the visit time has passed
    or it happened, `superseded` = the user's `site_visit` is cancelled or at another time);
  * `dead_lettered` (bad input, with `reason`) or `failed` (a permanent send error, with
    `error_code`); `pending`/`sending` mean in progress.
  `text` is the message that was (or would have been) sent; `text_source` says `openai` or
  `fallback` (with `fallback_reason`). Every state but `sent` and `unknown_outcome` is evaluated
  again when the event arrives again, so a fixed cause plus a redrive sends it exactly once.
* SQS `leadflow-followups-dlq`: bad or undeliverable messages, each with a `reason_code`
  attribute (`invalid_json`, `invalid_contract`, `unknown_user`, `invalid_phone`,
  `send_failed_131026`, ...). Fix the cause, then run **`followups_redrive`** (params `reasons`,
  `max_messages`, `dry_run`) to move them back.
* Only connect errors and explicit throttling (429, 130429, 131056) are retried at once; other
  "not now" answers come back via SQS after a backoff (after 5 receives SQS moves a message to
  the DLQ without a reason attribute: `no_reason` in the redrive).
* Account-level errors (190 token, 131042 payment, 132001 template, 10/200 permission, 368
  blocked, 131031 locked, or a missing template configuration) stop the batch: nothing is
  marked failed, every unsent message goes back on the queue as a fresh copy (back in 15 min;
  its receive count starts again, so however long the outage, SQS never dead-letters it), and
  the task fails once, without retries, with one alert naming the code.

Trigger it by hand with `max_wait_seconds` set low to drain the queue without waiting.
"""

from __future__ import annotations

from airflow.sdk import dag

from leadflow.config import VAR_QUEUE_URL
from leadflow.followups import dag_settings
from leadflow.followups.dag_settings import DAG_ID, SENSOR_MAX_WAIT_SECONDS, SENSOR_TIMEOUT_GRACE_SECONDS
from leadflow.queue_dag import batch_sensor, batch_tasks, continuous_dag_args


@dag(
    dag_id=DAG_ID,
    # Continuous: the next run starts as soon as one ends, and each run spends its idle time in a
    # deferred long poll (no worker slot). A cron schedule would add up to a period of latency
    # and either overlap runs or leave gaps; with max_active_runs=1 there is always exactly one
    # consumer, so a message is never processed by two runs at once.
    schedule="@continuous",
    **continuous_dag_args(max_wait_seconds=SENSOR_MAX_WAIT_SECONDS, what="message"),
    tags=["leadflow", "whatsapp", "followups", "sqs"],
    doc_md=__doc__,
)
def whatsapp_followups():
    receive = batch_sensor(
        task_id="receive_messages",
        task_display_name="Wait for follow-up events (SQS)",
        queue_url_variable=VAR_QUEUE_URL,
        settings=dag_settings,
        timeout_grace_seconds=SENSOR_TIMEOUT_GRACE_SECONDS,
    )
    batch_tasks(
        receive,
        tasks_module="leadflow.followups.tasks",
        process_task_id="process_messages",
        process_display_name="Validate, personalise and send",
        alert_display_name="Alert on dead letters",
        settings=dag_settings,
    )


whatsapp_followups()
