"""Batch objects: a received SQS batch as JSON in the object store, one per sensor try.

``<leadflow_object_store_base>/<prefix>/<run_id>/batch-<try>.json``. The trigger (in the
triggerer) or the sensor (poking) writes it, the processing task reads it, ``cleanup_batch``
deletes the run's whole prefix. Only :func:`batch_reference` travels in trigger events and XCom.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from leadflow.config import AWS_CONN_ID, DEFAULT_OBJECT_STORE_BASE, VAR_OBJECT_STORE_BASE

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# What every receive asks SQS for (the processors read the receive count).
SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]


def _object_path(url: str) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    conn_id = AWS_CONN_ID if url.startswith(("s3://", "s3a://")) else None
    return ObjectStoragePath(url, conn_id=conn_id)


def run_folder_url(run_id: str, prefix: str) -> str:
    """Where every batch object of one DAG run goes (one per try: a discarded trigger event's too)."""
    from airflow.sdk import Variable

    base = Variable.get(VAR_OBJECT_STORE_BASE, default=None) or DEFAULT_OBJECT_STORE_BASE
    safe_run_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return f"{base.rstrip('/')}/{prefix}/{safe_run_id}"


def batch_url(run_id: str, try_number: int, prefix: str) -> str:
    return f"{run_folder_url(run_id, prefix)}/batch-{try_number}.json"


def write_batch(url: str, messages: Sequence[dict[str, Any]]) -> None:
    path = _object_path(url)
    if path.protocol in ("file", "local", ""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(messages), ensure_ascii=False))


def read_batch(url: str) -> list[dict[str, Any]]:
    return list(json.loads(_object_path(url).read_text()))


def batch_reference(url: str, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What travels in the trigger event and XCom: no body, no receipt handle."""
    return {"batch_path": url, "count": len(messages), "message_ids": [str(m.get("MessageId")) for m in messages]}


def delete_batch(url: str) -> bool:
    path = _object_path(url)
    if not path.exists():
        return False
    path.unlink()
    return True


def delete_run_batches(run_id: str, prefix: str) -> int:
    """Delete every batch object of the run (by prefix), whichever try or trigger wrote it; return how many.

    The XCom names only the batch the run processed; a trigger whose event was discarded (its
    sensor try timed out, was cleared or failed) wrote another under the same prefix.
    """
    folder = _object_path(run_folder_url(run_id, prefix))
    if not folder.exists():
        return 0
    deleted = 0
    for child in list(folder.iterdir()):
        child.unlink()
        deleted += 1
    if folder.protocol in ("file", "local", "") and folder.exists():
        folder.rmdir()  # object stores have no folders; a local one would stay behind empty
    return deleted
