"""
### Interaction reports: freshness watchdog (every 5 minutes, 09:00–22:55 IST)

Raises **one** "report is late" alert on the alerts topic for each scheduled hour whose data has
not landed in the sheets `leadflow_report_freshness_minutes` (default 20) after its scheduled time,
and **one** "recovered" note when it lands. It asks about the data, not a run's state: an hour has
landed when a successful run covered its interval, or when a later successful run read everything
written since (the report's change watermark). So clearing or reprocessing an hour that landed
raises nothing, and an hour with **no run at all** (scheduler outage, paused DAG) alerts, then
recovers when the next run covers it. Hours are checked over the last 24 hours, so a late hour is
caught even if this watchdog was itself paused for a while; hours before the report's first
successful run are not expected.

Alerts are de-duplicated in MongoDB (collection `report_freshness`, one document per alerted
run), so two schedulers, a re-run of this DAG or a manual trigger never alert twice. A manual
run checks as of its logical date (now, if none is given).

**Needs.** Connections `mongo_default`, `aws_default`; Variables `leadflow_alerts_sns_topic_arn`,
`leadflow_report_freshness_minutes`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import CronTriggerTimetable, dag, task

from leadflow.dag_defaults import default_args
from leadflow.reports.freshness import WATCHDOG_CRON


@dag(
    schedule=CronTriggerTimetable(WATCHDOG_CRON, timezone="Asia/Kolkata"),
    start_date=datetime(2026, 11, 1, 9, tzinfo=ZoneInfo("Asia/Kolkata")),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["leadflow", "reports", "alerts"],
    doc_md=__doc__,
)
def interaction_reports_freshness() -> None:
    @task(multiple_outputs=False, task_display_name="Alert on late report hours")
    def check(**context: Any) -> dict[str, Any]:
        from datetime import UTC, timedelta

        from leadflow.mongo import get_database
        from leadflow.reports.freshness import TaskSdkRunStates, check_freshness, freshness_minutes

        now = context.get("data_interval_end") or context["dag_run"].run_after or datetime.now(UTC)
        result = check_freshness(
            get_database(), TaskSdkRunStates(context["ti"]), now, timedelta(minutes=freshness_minutes())
        )
        return result.as_dict()

    check()


interaction_reports_freshness()
