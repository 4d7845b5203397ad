"""
### Follow-ups redrive

Moves dead-lettered follow-up messages from `leadflow-followups-dlq` back to `leadflow-followups`
once their cause is fixed (a user's phone number corrected, OpenAI quota topped up, a template
approved), so `whatsapp_followups` evaluates them again. Triggered by hand only.

**Params**

* `queue`: `followups` (default), `reminders` (the site-visit reminders' pair,
  `leadflow-reminders-dlq` → `leadflow-reminders`) or `statuses`: the receipts' pair, `leadflow-whatsapp-statuses-dlq`
  → `leadflow-whatsapp-statuses` (say, webhooks refused as `bad_signature` while the
  `whatsapp_default` connection still held a rotated app secret). A message goes back with the
  attributes it arrived with, the webhook's `signature` included.
* `reasons`: the DLQ `reason_code`s to move, e.g. `["invalid_phone"]` or `["send_failed_*"]`;
  empty = every reason. `no_reason` selects messages SQS moved after 5 failed receives.
* `max_messages`: move at most this many.
* `dry_run` (default **on**): only count what would move; nothing leaves the DLQ.

The `redrive` task's return value (XCom tab) is the summary: examined, moved (or would move) and
kept, per reason, and the moved event ids. Safe to run twice: an event already `sent` is never
sent again (its copy is deleted as a duplicate); every other state is re-evaluated, so a fixed
cause sends it exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from leadflow.dag_defaults import default_args


@dag(
    dag_id="followups_redrive",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=2),
    params={
        "queue": Param("followups", enum=["followups", "reminders", "statuses"], description="which DLQ to move from"),
        "reasons": Param([], type="array", items={"type": "string"}, description="reason_codes to move; empty = all"),
        "max_messages": Param(100, type="integer", minimum=1, maximum=10000, description="move at most this many"),
        "dry_run": Param(True, type="boolean", description="only count what would be moved"),
    },
    tags=["leadflow", "whatsapp", "followups", "sqs", "operations"],
    doc_md=__doc__,
)
def followups_redrive():
    @task(multiple_outputs=False, task_display_name="Move DLQ messages back to the main queue")
    def redrive(params: dict | None = None) -> dict:
        from leadflow.messaging.redrive import redrive_from_airflow

        params = params or {}
        return redrive_from_airflow(
            params.get("reasons"),
            params.get("max_messages", 100),
            params.get("dry_run", True),
            queue=params.get("queue", "followups"),
        )

    redrive()


followups_redrive()
