"""
### Follow-up planner (every 5 minutes)

Decides **when** to follow up with a buyer and puts the events on the SQS queue
`leadflow-followups` (Variable `leadflow_followups_queue_url`), where `whatsapp_followups` sends
them. Three rules, thresholds in the JSON Variable `leadflow_followup_rules`:

* **Site-visit reminder** (`site_visit_reminder`): `site_visit.status == "scheduled"` and the
  reminder time (`scheduled_at` − 15 min) falls before the next run's planning point (this
  run's + 5 min). Sent with SQS `DelaySeconds` = the seconds left until the reminder time, so it
  arrives on time: a 15:00 visit is planned by the 14:40 run and delivered at 14:45. Booked less
  than 15 minutes ahead → at once; visit already over → none.
* **Cost-sheet follow-up** (`cost_sheet_followup`): `inquiry_type == "cost_sheet"`, last message
  from the buyer 2 h to 7 days old, no cost-sheet follow-up since that message.
* **Hot-lead nudge** (`inquiry_followup`): `ranking == "High"`, no interaction for 48 h, no
  inquiry follow-up in the last 7 days.

Nudges (the last two) only go out 09:00–21:00 IST; outside that window they wait for the first
run in hours. Buyers with `whatsapp_opt_in == false` are never planned. At most one nudge per
buyer per run (the cost-sheet one wins).

**Exactly once.** Event ids are deterministic (`site_visit_reminder:<user_id>:<visit UTC>`,
`cost_sheet_followup:<user_id>:<interaction _id>`, `inquiry_followup:<user_id>:<IST date>`).
Each enqueued event is recorded in MongoDB `followup_plans`; a run finds it there and counts it
*already planned* instead of sending it again. The delivery ledger sends an event id at most once
anyway, so a duplicate message after a crash is harmless.

**Planning point** = the run's data interval end (the 14:40 run plans as of 14:40), so clearing a
run or backfilling a missed interval plans what that interval would have planned; visits already
over by the wall clock get nothing, and a backfill run nudges only if the wall clock is in hours.
Every run re-evaluates whole windows, so the next on-time run also covers a missed one.

    airflow backfill create --dag-id followup_planner --max-active-runs 1 \\
        --from-date 2026-11-20T14:00:00+05:30 --to-date 2026-11-20T15:00:00+05:30

**Run summary.** The `plan_followups` return value (XCom tab) and log: planning point, whether
nudges were allowed, `planned` and `already_planned` per rule, `held` (why matching buyers were
not planned), the reminders' delays and the SQS calls.

**Needs.** Connections `mongo_default`, `aws_default`. Variables `leadflow_followups_queue_url`,
`leadflow_followup_rules` (optional: defaults above), `leadflow_alerts_sns_topic_arn`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import CronDataIntervalTimetable, dag, task

from leadflow.dag_defaults import default_args


@dag(
    # Data intervals, not trigger times: the interval end is the planning point, so a cleared or
    # backfilled run plans as of its own time.
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="Asia/Kolkata"),
    start_date=datetime(2026, 11, 1, tzinfo=ZoneInfo("Asia/Kolkata")),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    # A run is a few indexed reads and a few SQS calls; retry fast, a reminder cannot wait 10 min.
    default_args=default_args(
        retry_delay=timedelta(seconds=15),
        max_retry_delay=timedelta(minutes=2),
        execution_timeout=timedelta(minutes=4),
    ),
    tags=["leadflow", "followups", "planner", "sqs"],
    doc_md=__doc__,
)
def followup_planner() -> None:
    @task(multiple_outputs=False, task_display_name="Plan reminders and nudges, enqueue")
    def plan_followups(**context: Any) -> dict[str, Any]:
        from leadflow.planner.run import plan_step

        return plan_step(context)

    plan_followups()


followup_planner()
