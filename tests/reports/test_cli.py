"""The standard local debugging command works on the DAG as shipped."""

from __future__ import annotations

import subprocess
import sys

import pymongo
import pytest

from devstack.airflow_home import prepare_home
from devstack.services import free_port
from tests.helpers import all_spreadsheets
from tests.reports import fixture


@pytest.mark.slow
def test_airflow_dags_test_exits_0_on_the_shipped_dag(tmp_path, clean_stack) -> None:
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)
    env = prepare_home(tmp_path / "airflow", api_port=free_port())
    subprocess.run(
        [sys.executable, "-m", "devstack.airflow_settings", "--state-dir", clean_stack.state_dir], env=env, check=True
    )
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "interaction_reports", "2026-11-20T11:00:00+05:30"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    sessions = all_spreadsheets(clean_stack)["Leadflow — Session-wise report"]["2026-11"]["rows"]
    assert [row[0] for row in sessions[1:]] == ["S1"]  # the 11:00 run wrote its session
