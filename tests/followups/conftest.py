"""Fixtures for the follow-up tests (helpers live in :mod:`tests.followups.support`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from devstack import clients
from tests.alerts import alert_inbox
from tests.followups.support import Env
from tests.helpers import load_dag


@pytest.fixture(scope="module")
def followups_dag(airflow_settings: Any) -> Any:
    return load_dag("whatsapp_followups")


@pytest.fixture
def env(clean_stack: Any) -> Iterator[Env]:
    stack = clean_stack
    # Make the WhatsApp stand-in as strict as Meta: the 6 s pair rate limit (a pacing bug shows
    # up as error 131056 in the call log). Its default templates are our approved set with their
    # structure (devstack/whatsapp_templates.json), checked as Meta checks them.
    clients.set_settings(stack.control_url("whatsapp"), pair_rate_limit_seconds=6.0)
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, alert_inbox(stack) as inbox:
        yield Env(stack=stack, db=client.leadflow, sqs=stack.boto3_client("sqs"), alerts=inbox)
