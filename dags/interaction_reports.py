"""
### Interaction reports (hourly, 09:00–21:00 IST)

Turns the chatbot's conversations in MongoDB into the two Google Sheets the sales team reads:

* **Session-wise report** — one row per chat session (tab per IST month, `YYYY-MM`).
* **Consolidated report** — one row per lead (tab `Leads`), newest activity first.

**Window and changes.** Each run covers its data interval: the 09:00 run covers 21:00 the previous
evening to 09:00 (the night), every other run the hour before it (reaching back a further
`leadflow_report_lookback_minutes`, default 15). It also covers everything *written* since the
last successful run (interactions by `_id` time, profiles by `updated_at`, with the same minutes
of overlap): a late message however late, a visit marked completed, a rank or name change, an
hour with no run at all. A touched session or lead is recomputed from *all* its data and
upserted by key, so re-running or backfilling any hour, in any order, leaves the sheets exactly
as the on-time runs would. A manual run without a logical date covers the last completed IST
clock hour. `record_landed` moves the change watermark only when the writes succeeded.

**Re-run / backfill.** Clear a run (or a task) in the UI, or backfill a range from the UI
(*Trigger ▸ Backfill*) or the CLI:

    airflow backfill create --dag-id interaction_reports \
        --from-date 2026-11-20T09:00:00+05:30 --to-date 2026-11-20T21:00:00+05:30

Writes share the `google_sheets` pool (1 slot), so backfills queue behind each other instead of
exceeding the Sheets quota.

**Needs.** Connections `mongo_default`, `google_cloud_default`, `aws_default` (alerts and,
on MWAA, the S3 intermediates). Variables `leadflow_session_report_spreadsheet_id`,
`leadflow_consolidated_report_spreadsheet_id` (created and filled in by the first run if unset),
`leadflow_report_share_with` (JSON list of emails), `leadflow_object_store_base`,
`leadflow_report_lookback_minutes`, `leadflow_alerts_sns_topic_arn`.

**Freshness.** The `interaction_reports_freshness` watchdog raises one "report is late" alert
when a scheduled hour's data has not landed 20 minutes (`leadflow_report_freshness_minutes`) after
its scheduled time (whether or not it has a run), and one "recovered" note when it lands; clearing
or reprocessing an hour that landed raises nothing.

**Dashboard.** The first run that finds no `Dashboard` tab builds one in each spreadsheet (pivot
tables and charts Sheets keeps up to date itself); later runs leave it alone. Trigger a run with
`rebuild_dashboard` = true to delete and rebuild it.

**Run summary.** The `finish` task's return value (XCom tab) holds the window (IST, lookback
included), touched sessions/users, what changed since the last successful run (`landed`:
interactions and profiles, the new watermark), rows updated/added per report, Sheets calls and
the data-quality counts; the same is in its log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from leadflow.config import GOOGLE_SHEETS_POOL
from leadflow.dag_defaults import default_args
from leadflow.reports.freshness import REPORT_CRON

SESSION_SHEET = Asset(name="leadflow_session_report", uri="x-gsheets://leadflow/session-report")
CONSOLIDATED_SHEET = Asset(name="leadflow_consolidated_report", uri="x-gsheets://leadflow/consolidated-report")


@dag(
    schedule=CronDataIntervalTimetable(REPORT_CRON, timezone="Asia/Kolkata"),
    start_date=datetime(2026, 11, 1, 9, tzinfo=ZoneInfo("Asia/Kolkata")),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["leadflow", "reports", "google-sheets"],
    doc_md=__doc__,
    params={
        "rebuild_dashboard": Param(
            False, type="boolean", description="Delete and rebuild the Dashboard tab of both spreadsheets."
        ),
    },
)
def interaction_reports() -> None:
    @task(task_display_name="Ensure MongoDB indexes")
    def ensure_indexes() -> list[str]:
        from leadflow.mongo import get_database
        from leadflow.mongo_indexes import ensure_indexes as create

        return create(get_database())

    @task(multiple_outputs=False, task_display_name="Extract touched sessions and users")
    def extract(**context: Any) -> dict[str, Any]:
        from leadflow.reports.pipeline import extract_step, lookback_minutes
        from leadflow.reports.window import report_window

        run = context["dag_run"]
        window = report_window(
            context.get("data_interval_start"), context.get("data_interval_end"), run.run_after, lookback_minutes()
        )
        return extract_step(run.dag_id, run.run_id, window)

    @task.branch(task_display_name="Anything to report?")
    def anything_touched(extracted: dict[str, Any], **context: Any) -> list[str] | str:
        # A rebuild of the dashboard is asked for by hand, often at a quiet hour: it still writes.
        # Touched users without a touched session changed nothing a row shows: a changed profile
        # touches its sessions, and a message without a session is not counted on its lead.
        if extracted["touched_sessions"] == 0 and not context["params"]["rebuild_dashboard"]:
            return "nothing_touched"
        return ["transform_sessions", "transform_consolidated"]

    @task(multiple_outputs=False, task_display_name="Transform: session-wise")
    def transform_sessions(extracted: dict[str, Any]) -> dict[str, Any]:
        from leadflow.reports.pipeline import transform_step

        return transform_step("sessions", extracted)

    @task(multiple_outputs=False, task_display_name="Transform: consolidated")
    def transform_consolidated(extracted: dict[str, Any]) -> dict[str, Any]:
        from leadflow.reports.pipeline import transform_step

        return transform_step("consolidated", extracted)

    @task(
        multiple_outputs=False,
        pool=GOOGLE_SHEETS_POOL,
        outlets=[SESSION_SHEET],
        task_display_name="Write session-wise sheet",
    )
    def write_sessions(transformed: dict[str, Any], **context: Any) -> dict[str, Any]:
        from leadflow.reports.pipeline import load_step

        return load_step("sessions", transformed, context["params"]["rebuild_dashboard"])

    @task(
        multiple_outputs=False,
        pool=GOOGLE_SHEETS_POOL,
        outlets=[CONSOLIDATED_SHEET],
        task_display_name="Write consolidated sheet",
    )
    def write_consolidated(transformed: dict[str, Any], **context: Any) -> dict[str, Any]:
        from leadflow.reports.pipeline import load_step

        return load_step("consolidated", transformed, context["params"]["rebuild_dashboard"])

    # none_failed: only when every write succeeded (or none was needed). The next run's change
    # scan starts from this run's read, so a failed run's changes are read again.
    @task(multiple_outputs=False, trigger_rule="none_failed", task_display_name="Record what landed")
    def record_landed(extracted: dict[str, Any]) -> dict[str, Any]:
        from leadflow.reports.watermark import record_step

        return record_step(extracted)

    # none_failed: runs after a skip (nothing touched) but not after a failure, so a cleared
    # failed task still finds its inputs in the run folder.
    @task(multiple_outputs=False, trigger_rule="none_failed", task_display_name="Summarise and clean up")
    def finish(
        extracted: dict[str, Any],
        sessions: dict[str, Any] | None,
        consolidated: dict[str, Any] | None,
        session_frame: dict[str, Any] | None,
        consolidated_frame: dict[str, Any] | None,
        landed: dict[str, Any] | None,
    ) -> dict[str, Any]:
        from leadflow.reports.summary import finish_step

        return finish_step(
            extracted,
            {
                "landed": landed,
                "session_report": sessions,
                "consolidated_report": consolidated,
                "session_data_quality": (session_frame or {}).get("data_quality"),
                "consolidated_data_quality": (consolidated_frame or {}).get("data_quality"),
            },
        )

    extracted = extract()
    ensure_indexes() >> extracted
    branch = anything_touched(extracted)
    session_frame = transform_sessions(extracted)
    consolidated_frame = transform_consolidated(extracted)
    branch >> [session_frame, consolidated_frame]
    nothing_touched = EmptyOperator(task_id="nothing_touched", task_display_name="Nothing touched: skip writes")
    branch >> nothing_touched
    written_sessions = write_sessions(session_frame)
    written_consolidated = write_consolidated(consolidated_frame)
    landed = record_landed(extracted)
    [written_sessions, written_consolidated, nothing_touched] >> landed
    finish(extracted, written_sessions, written_consolidated, session_frame, consolidated_frame, landed)


interaction_reports()
