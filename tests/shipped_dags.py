"""A DAG a test runs is the DAG as shipped: the guard that tests/conftest.py installs.

Tests used to lower a task's retries before ``dag.test()`` and put them back afterwards, so what
ran was not what ships, and a comparison after the test saw nothing amiss. The check is therefore
made while the task runs: an Airflow listener (the task runner calls it in the test's process, as
``dag.test()`` runs tasks there) compares the DAG the starting task belongs to, serialized as the
scheduler would store it, with the same file parsed afresh. A difference is recorded and fails the
test at teardown (an exception raised in a listener is only logged by Airflow).

One thing a run may change: a Param's value, to what the run's ``conf`` sets. Airflow writes
``dag_run.conf`` into the task's Param objects when it resolves a run's params
(``ParamsDict.__setitem__`` -> ``Param.resolve``), which in ``dag.test()`` are the test's DAG
object's. So the value of a Param the run's conf names is not compared; every other Param keeps its
shipped value (else a run without that conf would get an earlier run's value).

DAGs built inside a test (not loaded from ``dags/``) are not checked: they ship nowhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.listeners import hookimpl

from tests.helpers import REPO

DAGS_FOLDER = REPO / "dags"


def _serialized(dag: Any) -> dict[str, Any]:
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.serialize_dag(dag)


def _tasks(serialized: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["__var"]["task_id"]: task["__var"] for task in serialized["tasks"]}


def _without_values_of(run_conf: dict[str, Any], serialized: dict[str, Any]) -> dict[str, Any]:
    """``serialized`` with the values of the Params ``run_conf`` sets left out."""

    def params(pairs: list[Any]) -> list[Any]:
        return [
            (name, {k: v for k, v in param.items() if k != "default"} if name in run_conf else param)
            for name, param in pairs
        ]

    tasks = [
        {**task, "__var": {**task["__var"], "params": params(task["__var"]["params"])}}
        if "params" in task["__var"]
        else task
        for task in serialized["tasks"]
    ]
    return {**serialized, "params": params(serialized.get("params", [])), "tasks": tasks}


def differences(running: dict[str, Any], shipped: dict[str, Any]) -> list[str]:
    """Each attribute of the DAG or of one of its tasks that differs, as ``where.name: ran != shipped``."""
    found = [
        f"dag.{key}: {running.get(key)!r} != {shipped.get(key)!r}"
        for key in sorted((set(running) | set(shipped)) - {"tasks"})
        if running.get(key) != shipped.get(key)
    ]
    ran, parsed = _tasks(running), _tasks(shipped)
    for task_id in sorted(set(ran) | set(parsed)):
        if task_id not in ran or task_id not in parsed:
            found.append(f"{task_id}: {'added' if task_id in ran else 'removed'}")
            continue
        mine, theirs = ran[task_id], parsed[task_id]
        found += [
            f"{task_id}.{key}: {mine.get(key)!r} != {theirs.get(key)!r}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]
    return found


class ShippedDagGuard:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self._shipped: dict[tuple[Any, ...], dict[str, Any]] = {}

    def shipped(self, fileloc: Path, dag_id: str) -> dict[str, Any]:
        """The file parsed afresh; cached under the parse-time configuration it was parsed with."""
        from airflow.dag_processing.dagbag import DagBag

        config = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AIRFLOW__")))
        key = (fileloc, dag_id, config)
        if key not in self._shipped:
            bag = DagBag(dag_folder=str(fileloc))
            assert not bag.import_errors, bag.import_errors
            self._shipped[key] = _serialized(bag.get_dag(dag_id))
        return self._shipped[key]

    def check(self, dag: Any, task_id: str, run_conf: dict[str, Any]) -> None:
        fileloc = Path(dag.fileloc).resolve()
        if fileloc.parent != DAGS_FOLDER:
            return
        running = _without_values_of(run_conf, _serialized(dag))
        shipped = _without_values_of(run_conf, self.shipped(fileloc, dag.dag_id))
        found = "; ".join(differences(running, shipped))
        if found and not any(v.endswith(f" edited: {found}") for v in self.violations):  # once, not per task
            self.violations.append(f"{dag.dag_id} ran {task_id} edited: {found}")

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        try:
            run_conf = task_instance.get_template_context()["dag_run"].conf or {}
            self.check(task_instance.task.dag, task_instance.task_id, run_conf)
        except Exception as error:  # Airflow would only log it; the test must fail
            self.violations.append(f"the shipped-DAG check itself failed: {error!r}")


GUARD = ShippedDagGuard()


def install() -> None:
    from airflow.sdk.listener import get_listener_manager

    get_listener_manager().add_listener(GUARD)
