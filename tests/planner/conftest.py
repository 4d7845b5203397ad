"""Fixtures for the planner tests (helpers live in :mod:`tests.planner.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from tests.alerts import alert_inbox
from tests.helpers import load_dag
from tests.planner.support import PlannerEnv


@pytest.fixture(scope="module")
def planner_dag(airflow_settings: Any) -> Any:
    return load_dag("followup_planner")


@pytest.fixture
def penv(clean_stack: Any) -> Iterator[PlannerEnv]:
    from airflow.models import Variable

    stack = clean_stack
    Variable.delete("leadflow_followup_rules")
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, alert_inbox(stack) as inbox:
        yield PlannerEnv(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=inbox)
    Variable.delete("leadflow_followup_rules")
