"""Report freshness per scheduled hour: landed, late, missing, re-run, from the runs Airflow keeps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from devstack.seed import IST

DAY = date(2026, 11, 30)
FRESHNESS = timedelta(minutes=20)
NOW = datetime.combine(DAY, time(12, 15), tzinfo=IST).astimezone(UTC)  # 12:15 IST


def _hour(h: int) -> datetime:
    return datetime.combine(DAY, time(h), tzinfo=IST).astimezone(UTC)


def _run(session, run_id: str, run_type: str, hour: datetime, state: str, ended: datetime | None, clears: int = 0):
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    run = DagRun(
        dag_id="interaction_reports",
        run_id=run_id,
        run_type=DagRunType(run_type),
        state=DagRunState(state),
        run_after=hour,
        logical_date=hour - timedelta(hours=1),
        data_interval=(hour - timedelta(hours=1), hour),
        triggered_by=DagRunTriggeredByType.TEST,
    )
    run.start_date, run.end_date, run.clear_number = hour, ended, clears
    session.add(run)


@pytest.fixture
def hours(airflow_db):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from leadflow.reports.freshness import scheduled_run_id
    from leadflow_ui.airflow_state import report_hours

    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == "interaction_reports"))
        _run(session, scheduled_run_id(_hour(9)), "scheduled", _hour(9), "success", _hour(9) + timedelta(minutes=4))
        _run(session, scheduled_run_id(_hour(10)), "scheduled", _hour(10), "success", _hour(10) + timedelta(minutes=50))
        # 11:00 never ran. 12:00 was cleared twice (re-runs) and runs again; it is not due yet.
        _run(session, scheduled_run_id(_hour(12)), "scheduled", _hour(12), "running", None, clears=2)
    with create_session() as session:
        rows = {row.hour: row for row in report_hours(session, DAY, NOW, FRESHNESS)}
    yield rows
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == "interaction_reports"))


def test_each_scheduled_hour_says_whether_it_landed_on_time(hours) -> None:
    assert list(hours) == [f"{h:02d}:00" for h in range(9, 22)]
    assert (hours["09:00"].state, hours["09:00"].late_minutes) == ("landed", None)
    assert hours["09:00"].landed_at == "2026-11-30 09:04:00 +05:30"
    assert (hours["10:00"].state, hours["10:00"].late_minutes) == ("late", 30)
    assert hours["11:00"].state == "missing"
    assert (hours["12:00"].state, hours["12:00"].reruns) == ("running", 2)
    assert {hours[f"{h}:00"].state for h in range(13, 22)} == {"due"}
