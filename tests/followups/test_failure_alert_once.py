"""One alert per task failure, even when Airflow calls the failure callback twice for it.

Airflow 3.3.1 does, for a task whose worker died: the scheduler's heartbeat-timeout check
requests the callback, then processes the executor's "failed" event while the task instance is
still ``running`` and requests it again (apache/airflow#68008; ``make chaos`` seed 5 got two
alerts for one ``process_messages``). The two calls here are what the dag processor makes then:
the same task instance, the same try.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from devstack.airflow_settings import connection_json, read_settings
from leadflow.alerts import FailureAlert
from tests.followups.support import Env


@pytest.fixture
def alert_settings(env: Env) -> None:
    with pytest.MonkeyPatch.context() as patch:  # outside a task, Airflow reads these from the environment
        patch.setenv("AIRFLOW_VAR_LEADFLOW_ALERTS_SNS_TOPIC_ARN", env.stack.alerts_topic_arn)
        for conn in read_settings(stack=env.stack).connections:
            if conn["conn_id"] in ("aws_default", "mongo_default"):
                patch.setenv(f"AIRFLOW_CONN_{conn['conn_id'].upper()}", connection_json(conn))
        yield


def test_a_failure_the_callback_reports_twice_is_alerted_once(env: Env, alert_settings: None) -> None:
    env.db.failure_alerts.delete_many({})
    ti = SimpleNamespace(dag_id="whatsapp_followups", task_id="process_messages", run_id="scheduled__chaos",
                         map_index=-1, try_number=3, log_url="http://airflow/log")  # fmt: skip

    FailureAlert().notify({"ti": ti, "exception": TimeoutError()})
    FailureAlert().notify({"ti": ti, "exception": None})  # the executor event's second request

    [alert] = env.alerts.read()
    assert (alert["task"], alert["run"], alert["try_number"], alert["error_class"]) == (
        "process_messages", "scheduled__chaos", 3, "TimeoutError"
    )

    # The same task failing again after a clear (its next try) is a new failure: alerted.
    FailureAlert().notify({"ti": SimpleNamespace(**{**vars(ti), "try_number": 4}), "exception": None})
    assert [a["try_number"] for a in env.alerts.read()] == [4]
