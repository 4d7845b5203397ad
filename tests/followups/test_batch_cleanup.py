"""Batch objects (message bodies) never outlive their run: the clean-up deletes the run's prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leadflow.followups.dag_settings import BATCH_PREFIX
from leadflow.followups.tasks import cleanup_batch
from leadflow.messaging.batch_store import batch_reference, batch_url, write_batch
from tests.followups.support import run_dag

BODY = [{"MessageId": "m-1", "ReceiptHandle": "handle", "Body": '{"user_id": "someone"}'}]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_clean_up_deletes_a_discarded_trigger_events_batch_too(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_LEADFLOW_OBJECT_STORE_BASE", f"file://{tmp_path}")
    run_id = "manual__2026-12-06T05:00:00+00:00"
    # Try 1's trigger wrote its batch and fired; the event was discarded (the try timed out and
    # was retried). Try 2's trigger wrote the batch the run processed and the XCom names.
    write_batch(batch_url(run_id, 1, BATCH_PREFIX), BODY)
    processed = batch_url(run_id, 2, BATCH_PREFIX)
    write_batch(processed, BODY)
    other_run = batch_url("manual__2026-12-06T05:05:00+00:00", 1, BATCH_PREFIX)
    write_batch(other_run, BODY)

    assert cleanup_batch(batch_reference(processed, BODY), run_id, BATCH_PREFIX)

    assert _files(tmp_path) == [f"{BATCH_PREFIX}/manual__2026-12-06T05_05_00_00_00/batch-1.json"]
    # A quiet run (no XCom) still clears what a discarded event left.
    write_batch(batch_url(run_id, 3, BATCH_PREFIX), BODY)
    assert cleanup_batch(None, run_id, BATCH_PREFIX)
    assert not (tmp_path / BATCH_PREFIX / "manual__2026-12-06T05_00_00_00_00").exists()


def test_a_run_leaves_no_object_behind(followups_dag: Any, env: Any) -> None:
    from airflow.models import Variable

    uid, _ = env.add_user("Meera Iyer", wrote_ago=None)
    env.enqueue({"event_id": "evt-cleanup", "event_type": "inquiry_followup", "user_id": uid})
    run = run_dag(followups_dag)

    base = Path(Variable.get("leadflow_object_store_base").removeprefix("file://"))
    safe_run_id = "".join(c if c.isalnum() or c in "._-" else "_" for c in run.run_id)
    assert not (base / BATCH_PREFIX / safe_run_id).exists()
