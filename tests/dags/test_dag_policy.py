"""Policy for every DAG in dags/, enforced over the real DagBag (not by convention)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import EXPECTED_DAG_IDS, REPO

DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


# Delivery receipts (issue 8).


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_one_dag_per_file_named_after_the_file(dagbag) -> None:
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS
    assert {p.stem for p in DAG_FILES} == EXPECTED_DAG_IDS
    for dag in dagbag.dags.values():
        assert Path(dag.fileloc).stem == dag.dag_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_dag_metadata(dagbag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    module_doc = ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()))
    assert module_doc, "the DAG file needs a module docstring for doc_md"
    assert (dag.doc_md or "").strip() == module_doc.strip(), "doc_md must be the module docstring"
    assert dag.tags, "every DAG needs tags"
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.start_date is not None
    assert dag.start_date.tzinfo is not None


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_every_task_retries_with_backoff_and_alerts(dagbag, dag_id: str) -> None:
    for task in dagbag.get_dag(dag_id).tasks:
        assert task.owner not in ("", "airflow"), f"{task.task_id}: set a real owner"
        if task.task_type == "EmptyOperator":
            continue  # runs no code: nothing to retry or alert on
        assert task.retries >= 2, f"{task.task_id}: retries={task.retries}"
        assert task.retry_exponential_backoff, f"{task.task_id}: no exponential backoff"
        assert task.on_failure_callback, f"{task.task_id}: no failure alert"


def test_parsing_does_no_connection_variable_or_network_lookup(airflow_db) -> None:
    """Parse the DAG files in a fresh interpreter where every such lookup raises."""
    script = textwrap.dedent(
        """
        import socket, sys
        from unittest import mock

        class ParseTimeIO(Exception):
            pass

        def refuse(what):
            def _raise(*args, **kwargs):
                raise ParseTimeIO(what)
            return _raise

        import airflow.sdk, pymongo, requests
        from airflow.sdk.bases.hook import BaseHook
        tripwires = [
            mock.patch.object(socket.socket, "connect", refuse("socket connect")),
            mock.patch.object(socket, "create_connection", refuse("socket connect")),
            mock.patch.object(airflow.sdk.Variable, "get", refuse("Variable.get")),
            mock.patch.object(BaseHook, "get_connection", refuse("get_connection")),
            mock.patch.object(pymongo.MongoClient, "__init__", refuse("MongoClient")),
            mock.patch.object(requests.Session, "request", refuse("HTTP request")),
        ]
        for wire in tripwires:
            wire.start()
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder=sys.argv[1])
        print(sorted(bag.dag_ids))
        if bag.import_errors:
            print(bag.import_errors, file=sys.stderr)
            sys.exit(1)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(REPO / "dags")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interaction_reports" in result.stdout
    assert "whatsapp_followups" in result.stdout
    assert "followup_planner" in result.stdout  # planner (issue 10)
