"""Fixtures for the receipts tests (helpers live in :mod:`tests.statuses.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from tests.alerts import alert_inbox
from tests.helpers import load_dag
from tests.statuses.support import ReceiptsEnv


@pytest.fixture(scope="module")
def statuses_dag(airflow_settings: Any) -> Any:
    return load_dag("whatsapp_statuses")


@pytest.fixture(scope="module")
def followups_dag(airflow_settings: Any) -> Any:
    return load_dag("whatsapp_followups")


@pytest.fixture(scope="module")
def redrive_dag(airflow_settings: Any) -> Any:
    return load_dag("followups_redrive")


@pytest.fixture
def env(clean_stack: Any) -> Iterator[ReceiptsEnv]:
    # As strict as Meta: the reset stand-in accepts only our approved templates, with the
    # structure they were approved with (devstack/whatsapp_templates.json).
    stack = clean_stack
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, alert_inbox(stack) as inbox:
        yield ReceiptsEnv(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=inbox)
