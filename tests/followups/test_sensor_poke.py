"""The sensor's non-deferrable poke runs the trigger's one drain-early receive; no import cycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from leadflow.messaging.batch_store import read_batch
from tests.followups.support import event
from tests.helpers import REPO


def test_a_poke_drains_the_queue_into_a_batch_object(env: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": env.stack.sqs_url},
    }))  # fmt: skip
    monkeypatch.setenv("AIRFLOW_VAR_LEADFLOW_OBJECT_STORE_BASE", f"file://{tmp_path}")
    from leadflow.messaging.sensor import FollowupsSqsSensor

    ids = [env.enqueue(event("inquiry_followup", env.add_user(f"Buyer {n}")[0])) for n in range(12)]
    sensor = FollowupsSqsSensor(
        task_id="receive", sqs_queue=env.stack.queue_url, max_messages=10, num_batches=3, wait_time_seconds=1,
        visibility_timeout=60, deferrable=False, batch_prefix="whatsapp_followups",
    )  # fmt: skip

    done = sensor.poke({"ti": SimpleNamespace(run_id="manual__poke", try_number=1)})

    reference = done.xcom_value
    assert sorted(reference["message_ids"]) == sorted(ids)
    stored = read_batch(reference["batch_path"])
    assert [m["MessageId"] for m in stored] == reference["message_ids"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in stored)


def test_the_trigger_does_not_import_the_sensor() -> None:
    probe = "import sys, leadflow.messaging.trigger; print('leadflow.messaging.sensor' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": f"{REPO / 'include'}:{REPO}", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert out.strip() == "False"
