"""Fixtures for the receipts tests (helpers live in :mod:`tests.statuses.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from devstack import clients
from tests.alerts import alert_inbox
from tests.followups.support import TEMPLATES
from tests.helpers import load_dag
from tests.statuses.support import ReceiptsEnv


@pytest.fixture(scope="module")
def statuses_dag(airflow_settings: Any) -> Any:
    return load_dag("whatsapp_statuses")


@pytest.fixture(scope="module")
def followups_dag(airflow_settings: Any) -> Any:
    return load_dag("whatsapp_followups")


@pytest.fixture
def env(clean_stack: Any) -> Iterator[ReceiptsEnv]:
    stack = clean_stack
    # As strict as Meta: only the approved templates are accepted.
    clients.set_settings(stack.control_url("whatsapp"), templates=sorted(TEMPLATES.values()))
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, alert_inbox(stack) as inbox:
        yield ReceiptsEnv(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=inbox)
