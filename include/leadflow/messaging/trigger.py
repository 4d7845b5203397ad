"""The follow-ups SQS trigger (runs in the triggerer; see :mod:`leadflow.messaging.sensor`).

A module of its own so that parsing the DAG, which needs only the sensor, does not import the
amazon provider's hooks and boto3: the sensor imports this module when it defers or pokes. It
imports only the batch store, never the sensor (no import cycle). :meth:`FollowupsSqsTrigger.drain`
is the one drain-early receive; the sensor's non-deferrable poke runs it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
from airflow.triggers.base import TriggerEvent

from leadflow.messaging.batch_store import SYSTEM_ATTRIBUTES, batch_reference, write_batch
from leadflow.messaging.defaults import DRAIN_WAIT_SECONDS, MAX_WAIT_SECONDS


class FollowupsSqsTrigger(SqsSensorTrigger):
    def __init__(
        self,
        *,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        drain_wait_seconds: int = DRAIN_WAIT_SECONDS,
        message_attribute_names: Sequence[str] = (),
        batch_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_wait_seconds = float(max_wait_seconds)
        self.drain_wait_seconds = int(drain_wait_seconds)
        self.message_attribute_names = list(message_attribute_names)
        # Where this trigger writes the batch; the event then carries only the reference.
        self.batch_url = batch_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            max_wait_seconds=self.max_wait_seconds,
            drain_wait_seconds=self.drain_wait_seconds,
            message_attribute_names=self.message_attribute_names,
            batch_url=self.batch_url,
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def _receive(self, client: Any, wait_seconds: int) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.sqs_queue,
            "MaxNumberOfMessages": self.max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
        }
        if self.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self.visibility_timeout
        if self.message_attribute_names:
            kwargs["MessageAttributeNames"] = self.message_attribute_names
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
        """Write the batch to the object store; the event (metadata DB, triggerer log) carries only its reference."""
        if self.batch_url is None:  # serialised by an older version of the sensor
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
