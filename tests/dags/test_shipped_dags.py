"""The guard of tests/shipped_dags.py: a run of an edited DAG is reported, even when the test puts
the edit back afterwards; a run of the DAG as its file builds it is not."""

from __future__ import annotations

from tests.helpers import load_dag
from tests.reports import fixture
from tests.shipped_dags import GUARD

ONLY_ENSURE_INDEXES = "(?!ensure_indexes$).*"  # dag.test() marks every other task successful unrun


def test_a_run_of_an_edited_dag_is_reported_even_when_the_edit_is_put_back(clean_stack) -> None:
    dag = load_dag("interaction_reports")  # its own copy: no other test's DAG object is touched
    assert GUARD.violations == []

    dag.test(logical_date=fixture.ist(20, 11, 0), mark_success_pattern=ONLY_ENSURE_INDEXES)
    assert GUARD.violations == []  # as shipped

    task = dag.task_dict["ensure_indexes"]
    shipped = task.retries
    task.retries = 0  # what the report tests used to do
    try:
        dag.test(logical_date=fixture.ist(20, 12, 0), mark_success_pattern=ONLY_ENSURE_INDEXES)
    finally:
        task.retries = shipped
    reported, GUARD.violations = GUARD.violations, []  # taken, so that this test's own teardown passes
    assert len(reported) == 1, reported
    assert reported[0].startswith("interaction_reports ran ensure_indexes edited: ensure_indexes.retries: ")
    assert reported[0].endswith(f" != {shipped}")


def test_a_param_set_by_the_runs_conf_is_allowed_and_its_leftover_in_the_next_run_is_reported(clean_stack) -> None:
    dag = load_dag("interaction_reports")
    rebuild = {"rebuild_dashboard": True}
    dag.test(logical_date=fixture.ist(20, 11, 0), run_conf=rebuild, mark_success_pattern=ONLY_ENSURE_INDEXES)
    assert GUARD.violations == []  # the value the run's conf asked for

    # Airflow left that value in the DAG object's Param: a run without it would not rebuild as shipped.
    dag.test(logical_date=fixture.ist(20, 12, 0), mark_success_pattern=ONLY_ENSURE_INDEXES)
    reported, GUARD.violations = GUARD.violations, []
    assert len(reported) == 1, reported
    assert "ensure_indexes.params: [('rebuild_dashboard', {" in reported[0]
    assert "'default': True" in reported[0]
