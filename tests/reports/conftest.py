"""Fixtures the report DAG tests share: the shipped DAG, and the hand-written fixture in MongoDB."""

from __future__ import annotations

import pymongo
import pytest

from tests.helpers import load_dag
from tests.reports import fixture


@pytest.fixture(scope="module")
def dag(airflow_settings):
    return load_dag("interaction_reports")


@pytest.fixture
def seeded(clean_stack):
    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        client.leadflow.users.insert_many(fixture.USERS)
        client.leadflow.interactions.insert_many(fixture.INTERACTIONS)
    return clean_stack


@pytest.fixture
def row_index(clean_stack):
    """The consolidated report's row index on the stack's (emptied) MongoDB."""
    from leadflow.reports.row_index import LEADS_ROW_INDEX, RowIndex

    with pymongo.MongoClient(clean_stack.mongo_uri) as client:
        yield RowIndex(client.leadflow, LEADS_ROW_INDEX)
