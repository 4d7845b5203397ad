"""Shared fixtures: one stand-in stack and one migrated Airflow metadata DB per test session.

Airflow reads its configuration on first import, so the environment is set here, at import
time, before any test module imports ``airflow``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.airflow_home import airflow_env, prepare_home
from devstack.services import recreate_queues

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="leadflow-test-airflow-"))
os.environ.update(airflow_env(AIRFLOW_HOME))


def _retry_without_delay() -> None:
    """The DAGs run as shipped, retries included; only the first retry's delay is configured down
    (30 s to Airflow's 1 s floor) so that a run exhausting its retries takes seconds, not minutes.
    In this process's configuration, not the environment: the Airflow components some tests
    start (scheduler, workers) keep the shipped delay."""
    from airflow.sdk import conf

    from leadflow.config import CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS

    if not conf.has_section(CONF_SECTION):
        conf.add_section(CONF_SECTION)
    conf.set(CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS, "0")


_retry_without_delay()  # before any test module parses a DAG

SPREADSHEET_VARIABLES = (
    "leadflow_session_report_spreadsheet_id",
    "leadflow_consolidated_report_spreadsheet_id",
)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata DB under the session's AIRFLOW_HOME."""
    from tests import shipped_dags

    prepare_home(AIRFLOW_HOME)
    shipped_dags.install()  # every DAG run from here on is checked against its file
    return AIRFLOW_HOME


@pytest.fixture(autouse=True)
def dags_run_as_shipped() -> Iterator[None]:
    """Fails a test that ran a DAG edited after parsing (tests/shipped_dags.py says why)."""
    yield
    if "tests.shipped_dags" in sys.modules:
        from tests.shipped_dags import GUARD

        edited, GUARD.violations = GUARD.violations, []
        assert not edited, "a test must run the DAG as its file builds it:\n" + "\n".join(edited)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from devstack.services import running_stack

    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def airflow_settings(airflow_db: Path, stack):
    """airflow_settings.yaml loaded into the metadata DB, pointed at the session's stack."""
    from devstack.airflow_settings import apply_settings, read_settings

    settings = read_settings(stack=stack)
    apply_settings(settings)
    return settings


@pytest.fixture
def clean_stack(stack, airflow_settings):
    """The stack with empty databases, queues, sheets and outboxes, and no spreadsheet ids."""
    import pymongo
    from airflow.models import Variable

    from devstack import clients

    with pymongo.MongoClient(stack.mongo_uri) as client:
        client.drop_database("leadflow")
    recreate_queues(stack)
    for service in ("sheets", "openai", "whatsapp"):
        clients.reset(stack.control_url(service))
    for key in SPREADSHEET_VARIABLES:
        Variable.delete(key)
    return stack
