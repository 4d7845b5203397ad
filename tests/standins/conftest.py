"""An SQS stand-in of the standins tests' own, with an in-flight quota small enough to reach."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.sqs_server import RunningServer, running_sqs_server
from tests.standins.sqs_support import IN_FLIGHT_LIMIT


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[RunningServer]:
    with running_sqs_server("--in-flight-limit", str(IN_FLIGHT_LIMIT)) as running:
        yield running
