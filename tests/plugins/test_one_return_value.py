"""Each task's XCom tab shows one readable ``return_value``, not one entry per dict key."""

from __future__ import annotations

import pytest

from tests.helpers import EXPECTED_DAG_IDS, load_dag


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_no_task_splits_its_return_value_into_keys(dag_id: str, airflow_db) -> None:
    # Airflow infers multiple_outputs=True from a ``-> dict`` annotation; the run summary then
    # lands as eight XCom keys, each nested value collapsed to ``{…}`` in the UI.
    dag = load_dag(dag_id)
    split = sorted(task.task_id for task in dag.tasks if getattr(task, "multiple_outputs", False))
    assert split == [], f"{dag_id}: tasks pushing one XCom per key: {split}"
