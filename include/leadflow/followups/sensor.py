"""SQS sensor for follow-ups: the received batch goes to object storage, only a reference to XCom.

The stock :class:`SqsSensor` pushes the message bodies to XCom; ours contain user ids and media
URLs, so :class:`FollowupsSqsSensor` writes the batch as JSON to
``<leadflow_object_store_base>/whatsapp_followups/<run_id>/batch-<try>.json`` and returns only
``{"batch_path", "count", "message_ids"}``. Messages are never deleted on reception: the
processing task deletes (or dead-letters) each one after the ledger records its outcome.
In deferrable mode the *trigger* writes the batch object itself and its event carries only the
path, the count and the message ids: the event is stored in the metadata DB (the task
instance's ``next_kwargs``) and logged by the triggerer, and must never hold a body or a
receipt handle (they name users, carry media URLs, and a handle lets anyone delete the message).
The triggerer needs write access to ``leadflow_object_store_base`` for that (the IAM policy grants
it to the MWAA execution role, which every component uses).

:class:`FollowupsSqsTrigger` changes two things about the stock trigger:

* a *drain-early* poke: the first receive long-polls (``wait_time_seconds``); once messages
  arrived, further receives in the same poke wait only ``drain_wait_seconds`` (1 s) and the poke
  stops at the first empty answer, so a handful of messages does not wait ``num_batches`` long
  polls;
* its own deadline (``max_wait_seconds``): when nothing arrived by then it fires a ``"empty"``
  event and the sensor ends *skipped* (a quiet run). An SQS error fires an ``"error"`` event
  that fails the task (and alerts) instead of being swallowed by ``soft_fail``, which is kept
  only for the deferral's hard timeout, a backstop behind the deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.sensors.sqs import SqsSensor
from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
from airflow.triggers.base import TriggerEvent

from leadflow.config import AWS_CONN_ID, DEFAULT_OBJECT_STORE_BASE, VAR_OBJECT_STORE_BASE
from leadflow.followups.dag_settings import (
    BATCH_PREFIX,
    SENSOR_DRAIN_WAIT_SECONDS,
    SENSOR_MAX_WAIT_SECONDS,
    SENSOR_TIMEOUT_GRACE_SECONDS,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]


class SqsReceiveError(RuntimeError):
    """Receiving failed. Deliberately not an AirflowException, so ``soft_fail`` cannot hide it."""


# --------------------------------------------------------------------------------------------
# Batch objects


def _object_path(url: str) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    conn_id = AWS_CONN_ID if url.startswith(("s3://", "s3a://")) else None
    return ObjectStoragePath(url, conn_id=conn_id)


def batch_url(run_id: str, try_number: int, prefix: str = BATCH_PREFIX) -> str:
    from airflow.sdk import Variable

    base = Variable.get(VAR_OBJECT_STORE_BASE, default=None) or DEFAULT_OBJECT_STORE_BASE
    safe_run_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return f"{base.rstrip('/')}/{prefix}/{safe_run_id}/batch-{try_number}.json"


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


# --------------------------------------------------------------------------------------------
# Trigger


class FollowupsSqsTrigger(SqsSensorTrigger):
    def __init__(
        self,
        *,
        max_wait_seconds: float = SENSOR_MAX_WAIT_SECONDS,
        drain_wait_seconds: int = SENSOR_DRAIN_WAIT_SECONDS,
        message_attribute_names: Sequence[str] = (),
        batch_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_wait_seconds = float(max_wait_seconds)
        self.drain_wait_seconds = int(drain_wait_seconds)
        self.message_attribute_names = list(message_attribute_names)
        self.batch_url = batch_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            max_wait_seconds=self.max_wait_seconds, drain_wait_seconds=self.drain_wait_seconds, batch_url=self.batch_url
        )
        kwargs["message_attribute_names"] = self.message_attribute_names
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def _receive(self, client: Any, wait_seconds: int) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.sqs_queue,
            "MaxNumberOfMessages": self.max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
        }
        if self.message_attribute_names:
            kwargs["MessageAttributeNames"] = self.message_attribute_names
        if self.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self.visibility_timeout
        response = await client.receive_message(**kwargs)
        return list(response.get("Messages") or [])

    async def drain(self, client: Any, first_wait: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for _ in range(self.num_batches):
            messages = await self._receive(client, first_wait if not batch else self.drain_wait_seconds)
            if not messages:
                break
            batch.extend(messages)
        return batch

    async def _stored(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Write the batch to the object store; the event carries only its reference."""
        if self.batch_url is None:  # a trigger serialised by an older version of the sensor
            return {"status": "success", "message_batch": batch}
        await asyncio.to_thread(write_batch, self.batch_url, batch)
        return {"status": "success", **batch_reference(self.batch_url, batch)}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.max_wait_seconds
        try:
            async with await self.hook.get_async_conn() as client:
                while True:
                    remaining = deadline - time.monotonic()
                    wait = max(0, min(self.wait_time_seconds, int(remaining)))
                    batch = await self.drain(client, wait)
                    if batch:
                        self.log.info("Received %d message(s) from %s", len(batch), self.sqs_queue)
                        yield TriggerEvent(await self._stored(batch))
                        return
                    if time.monotonic() >= deadline:
                        yield TriggerEvent({"status": "empty", "waited_seconds": self.max_wait_seconds})
                        return
                    await asyncio.sleep(min(self.waiter_delay, max(0.0, deadline - time.monotonic())))
        except Exception as exc:  # noqa: BLE001 - reported to the task as an error event
            yield TriggerEvent({"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]})


# --------------------------------------------------------------------------------------------
# Sensor


class FollowupsSqsSensor(SqsSensor):
    template_fields: Sequence[str] = (*SqsSensor.template_fields, "max_wait_seconds")

    def __init__(
        self,
        *,
        max_wait_seconds: int | str = SENSOR_MAX_WAIT_SECONDS,
        drain_wait_seconds: int = SENSOR_DRAIN_WAIT_SECONDS,
        message_attribute_names: Sequence[str] = (),
        batch_prefix: str = BATCH_PREFIX,
        **kwargs: Any,
    ) -> None:
        if kwargs.setdefault("delete_message_on_reception", False):
            raise ValueError("messages must be deleted only after their outcome is recorded")
        if kwargs.get("message_filtering"):
            raise ValueError("filtering would leave unmatched messages invisible until they time out")
        super().__init__(**kwargs)
        self.max_wait_seconds = max_wait_seconds
        self.drain_wait_seconds = drain_wait_seconds
        # Which message attributes to receive (the statuses DAG needs ``signature``).
        self.message_attribute_names = list(message_attribute_names)
        self.batch_prefix = batch_prefix

    def _max_wait(self) -> int:
        return max(1, int(self.max_wait_seconds))

    def execute(self, context: Context) -> Any:
        wait = self._max_wait()
        if not self.deferrable:
            self.timeout = wait
            return super().execute(context)
        ti = context["ti"]
        self.defer(
            trigger=FollowupsSqsTrigger(
                sqs_queue=self.sqs_queue,
                aws_conn_id=self.aws_conn_id,
                max_messages=self.max_messages,
                num_batches=self.num_batches,
                wait_time_seconds=self.wait_time_seconds,
                visibility_timeout=self.visibility_timeout,
                delete_message_on_reception=False,
                waiter_delay=int(self.poke_interval),
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
                max_wait_seconds=wait,
                drain_wait_seconds=self.drain_wait_seconds,
                message_attribute_names=self.message_attribute_names,
                batch_url=batch_url(ti.run_id, ti.try_number, self.batch_prefix),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=wait + SENSOR_TIMEOUT_GRACE_SECONDS),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        status = (event or {}).get("status")
        if status == "empty":
            raise AirflowSkipException(f"No follow-up messages within {self._max_wait()} s")
        if status != "success":
            raise SqsReceiveError(f"Receiving from SQS failed: {(event or {}).get('error', event)}")
        if "batch_path" in event:
            return {key: event[key] for key in ("batch_path", "count", "message_ids")}
        return self.store_batch(context, event["message_batch"])

    def poke(self, context: Context) -> Any:
        """The non-deferrable path: the same drain-early receive, synchronously."""
        from airflow.sdk import PokeReturnValue

        batch: list[dict[str, Any]] = []
        for _ in range(self.num_batches):
            kwargs: dict[str, Any] = {
                "QueueUrl": self.sqs_queue,
                "MaxNumberOfMessages": self.max_messages,
                "WaitTimeSeconds": self.wait_time_seconds if not batch else self.drain_wait_seconds,
                "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
            }
            if self.message_attribute_names:
                kwargs["MessageAttributeNames"] = self.message_attribute_names
            if self.visibility_timeout is not None:
                kwargs["VisibilityTimeout"] = self.visibility_timeout
            messages = self.hook.conn.receive_message(**kwargs).get("Messages") or []
            if not messages:
                break
            batch.extend(messages)
        if not batch:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.store_batch(context, batch))

    def store_batch(self, context: Context, messages: list[dict[str, Any]]) -> dict[str, Any]:
        ti = context["ti"]
        url = batch_url(ti.run_id, ti.try_number, self.batch_prefix)
        write_batch(url, messages)
        self.log.info("Stored a batch of %d message(s) at %s", len(messages), url)
        return batch_reference(url, messages)
