"""What the metadata DB knows: the leadflow DAGs, their last runs, the report hours and the run
summaries the tasks returned (XCom ``return_value``). Index-backed reads of a bounded size."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadflow.reports.freshness import FIRST_HOUR, LAST_HOUR, REPORT_DAG_ID, scheduled_run_id
from leadflow.timefmt import ist
from leadflow_ui.ledger_stats import IST
from leadflow_ui.redact import redact

LEADFLOW_TAG = "leadflow"
RUNS_PER_DAG = 5


def leadflow_dag_ids(session: Session) -> list[str]:
    """The DAGs tagged ``leadflow`` (all the project ships), from the DAG table Airflow keeps."""
    from airflow.models.dag import DagTag

    return sorted(session.scalars(select(DagTag.dag_id).where(DagTag.name == LEADFLOW_TAG)))


def _when(value: datetime | None) -> str | None:
    return ist(value) if value else None


def last_runs(session: Session, dag_ids: list[str], per_dag: int = RUNS_PER_DAG) -> dict[str, list[dict[str, Any]]]:
    from airflow.models.dagrun import DagRun

    runs: dict[str, list[dict[str, Any]]] = {}
    for dag_id in dag_ids:
        # idx_dag_run_dag_id: one DAG's runs, newest first, a handful read.
        query = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(per_dag)
        runs[dag_id] = [
            {
                "run_id": run.run_id,
                "state": str(getattr(run.state, "value", run.state)),
                "run_type": str(getattr(run.run_type, "value", run.run_type)),
                "run_after": _when(run.run_after),
                "ended": _when(run.end_date),
            }
            for run in session.scalars(query)
        ]
    return runs


@dataclass
class ReportHour:
    hour: str  # "11:00"
    due_by: str
    run_id: str
    state: str  # landed / late / missing / running / due
    landed_at: str | None = None
    late_minutes: int | None = None
    reruns: int = 0  # times the scheduled run was cleared (re-run, or reprocessed by a backfill)


def report_hours(session: Session, day: date, now: datetime, freshness: timedelta) -> list[ReportHour]:
    """Each scheduled hour of the report on ``day`` (IST): when its scheduled run landed and
    whether that was late, is missing, or was run again (a clear, a backfill, a manual run)."""
    from airflow.models.dagrun import DagRun

    hours = [datetime.combine(day, time(hour), tzinfo=IST).astimezone(UTC) for hour in range(FIRST_HOUR, LAST_HOUR + 1)]
    runs = list(
        session.scalars(
            select(DagRun).where(
                DagRun.dag_id == REPORT_DAG_ID,
                DagRun.run_after >= hours[0] - timedelta(hours=1),
                DagRun.run_after <= hours[-1] + timedelta(hours=1),
            )
        )
    )
    by_id = {run.run_id: run for run in runs}
    rows = []
    for hour in hours:
        run_id = scheduled_run_id(hour)
        due = hour + freshness
        row = ReportHour(hour=hour.astimezone(IST).strftime("%H:%M"), due_by=ist(due), run_id=run_id, state="due")
        scheduled = by_id.get(run_id)
        # One run per logical date: a backfill or a re-run of the hour is a clear of this run.
        row.reruns = scheduled.clear_number if scheduled else 0
        if scheduled is not None and str(getattr(scheduled.state, "value", scheduled.state)) == "success":
            landed = scheduled.end_date
            row.landed_at = _when(landed)
            row.state = "landed"
            if landed and landed > due:
                row.state = "late"
                row.late_minutes = int((landed - due).total_seconds() // 60)
        elif now > due:
            row.state = "missing" if scheduled is None else "late"
        elif scheduled is not None:
            row.state = str(getattr(scheduled.state, "value", scheduled.state))
        rows.append(row)
    return rows


def run_summary(session: Session, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run and each task's return value (redacted), last task first; None if no run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        return None
    rows = session.scalars(
        select(XComModel)
        .where(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value")
        # Newest first: the last task returns the run summary (finish, process_messages, ...).
        .order_by(XComModel.timestamp.desc())
    )
    tasks = {row.task_id: redact(XComModel.deserialize_value(row)) for row in rows}
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": str(getattr(run.state, "value", run.state)),
        "run_type": str(getattr(run.run_type, "value", run.run_type)),
        "data_interval_start": _when(run.data_interval_start),
        "data_interval_end": _when(run.data_interval_end),
        "started": _when(run.start_date),
        "ended": _when(run.end_date),
        "tasks": tasks,
    }


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested summary as readable ``(name, value)`` rows: ``session_report.rows_added`` → 3."""
    if isinstance(value, dict):
        if not value and prefix:
            return [(prefix, "—")]
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list):
        shown = ", ".join(str(item) for item in value) if value else "—"
        return [(prefix or "value", shown)]
    return [(prefix or "value", "—" if value is None else str(value))]
