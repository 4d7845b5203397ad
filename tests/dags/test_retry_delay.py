"""The first retry's delay comes from Airflow's configuration, ``[leadflow] task_retry_delay_seconds``,
read when the DAG file is parsed: 30 s when unset, 0 in the tests' own process (tests/conftest.py)."""

from __future__ import annotations

import os
from datetime import timedelta
from unittest import mock

import pytest

from leadflow.config import CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS
from tests.helpers import REPO

OPTION = "AIRFLOW__LEADFLOW__TASK_RETRY_DELAY_SECONDS"  # how an operator sets it (on MWAA: a configuration option)


def parse(dag_id: str, delay: str | None):
    """The DAG parsed with the option set to ``delay`` in the environment, or not set anywhere."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import conf

    env = {k: v for k, v in os.environ.items() if k != OPTION} | ({OPTION: delay} if delay is not None else {})
    tests_value = conf.get(CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS)
    conf.remove_option(CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS)
    try:
        with mock.patch.dict(os.environ, env, clear=True):
            return DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    finally:
        conf.set(CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS, tests_value)


def delays(bag, dag_id: str) -> set[timedelta]:
    return {task.retry_delay for task in bag.get_dag(dag_id).tasks}


@pytest.mark.parametrize(("delay", "expected"), [(None, 30), ("7", 7), ("0", 0), ("2.5", 2.5)])
def test_the_report_tasks_wait_the_configured_delay_before_their_first_retry(airflow_db, delay, expected) -> None:
    assert delays(parse("interaction_reports", delay), "interaction_reports") == {timedelta(seconds=expected)}


def test_a_dag_that_sets_its_own_delay_keeps_it(airflow_db) -> None:
    assert delays(parse("followup_planner", "7"), "followup_planner") == {timedelta(seconds=15)}


@pytest.mark.parametrize("delay", ["-1", "soon", "nan"])
def test_an_impossible_delay_fails_the_parse_naming_the_option(airflow_db, delay) -> None:
    errors = parse("interaction_reports", delay).import_errors
    [(_, error)] = errors.items()
    assert "[leadflow] task_retry_delay_seconds must be a number of seconds" in error
    assert repr(delay) in error


def test_the_tests_own_process_retries_without_delay_and_passes_none_to_airflow_it_starts(airflow_db) -> None:
    from tests.helpers import load_dag

    assert {task.retry_delay for task in load_dag("interaction_reports").tasks} == {timedelta(0)}
    assert OPTION not in os.environ  # a scheduler or worker a test starts keeps the shipped delay
