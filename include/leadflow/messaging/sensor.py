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

:class:`~leadflow.messaging.trigger.FollowupsSqsTrigger` changes two things about the stock trigger:

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

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from leadflow.config import AWS_CONN_ID
from leadflow.messaging.batch_store import batch_reference, batch_url, write_batch
from leadflow.messaging.defaults import DRAIN_WAIT_SECONDS, MAX_WAIT_SECONDS, TIMEOUT_GRACE_SECONDS

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Context

    from leadflow.messaging.trigger import FollowupsSqsTrigger



class SqsReceiveError(RuntimeError):
    """Receiving failed. Deliberately not an AirflowException, so ``soft_fail`` cannot hide it."""


# --------------------------------------------------------------------------------------------
# Sensor


class FollowupsSqsSensor(BaseSensorOperator):
    """Receive a batch from SQS (deferred or poking) and store it; see the module doc.

    Built on the SDK's sensor rather than the amazon provider's ``SqsSensor`` so that parsing
    the DAG imports neither the provider's hooks nor boto3 (about a second per parse): the hook
    and the trigger are imported when the task runs. The arguments are ``SqsSensor``'s.
    """

    template_fields: Sequence[str] = (
        "aws_conn_id", "max_messages", "max_wait_seconds", "region_name", "sqs_queue", "verify",
    )  # fmt: skip

    def __init__(
        self,
        *,
        sqs_queue: str,
        aws_conn_id: str | None = AWS_CONN_ID,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        max_messages: int = 5,
        num_batches: int = 1,
        wait_time_seconds: int = 1,
        visibility_timeout: int | None = None,
        delete_message_on_reception: bool = False,
        message_filtering: str | None = None,
        deferrable: bool = True,
        max_wait_seconds: int | str = MAX_WAIT_SECONDS,
        drain_wait_seconds: int = DRAIN_WAIT_SECONDS,
        message_attribute_names: Sequence[str] = (),
        batch_prefix: str,
        **kwargs: Any,
    ) -> None:
        if delete_message_on_reception:
            raise ValueError("messages must be deleted only after their outcome is recorded")
        if message_filtering:
            raise ValueError("filtering would leave unmatched messages invisible until they time out")
        super().__init__(**kwargs)
        self.sqs_queue = sqs_queue
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.max_messages = max_messages
        self.num_batches = num_batches
        self.wait_time_seconds = wait_time_seconds
        self.visibility_timeout = visibility_timeout
        self.delete_message_on_reception = False
        self.deferrable = deferrable
        self.max_wait_seconds = max_wait_seconds
        self.drain_wait_seconds = drain_wait_seconds
        # Which message attributes to receive (the statuses DAG needs ``signature``).
        self.message_attribute_names = list(message_attribute_names)
        self.batch_prefix = batch_prefix

    @cached_property
    def hook(self) -> SqsHook:
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        return SqsHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=self.botocore_config
        )

    def _max_wait(self) -> int:
        return max(1, int(self.max_wait_seconds))

    def execute(self, context: Context) -> Any:
        wait = self._max_wait()
        if not self.deferrable:
            self.timeout = wait
            return super().execute(context)
        ti = context["ti"]
        self.defer(
            trigger=self._trigger(wait, batch_url(ti.run_id, ti.try_number, self.batch_prefix)),
            method_name="execute_complete",
            timeout=timedelta(seconds=wait + TIMEOUT_GRACE_SECONDS),
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
        # A trigger deferred by an older version still carries the batch itself.
        return self.store_batch(context, event["message_batch"])

    def _trigger(self, max_wait_seconds: int, url: str | None) -> FollowupsSqsTrigger:
        # Imported here: parsing the DAG must not import the provider's hooks and boto3.
        from leadflow.messaging.trigger import FollowupsSqsTrigger

        return FollowupsSqsTrigger(
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
            max_wait_seconds=max_wait_seconds,
            drain_wait_seconds=self.drain_wait_seconds,
            message_attribute_names=self.message_attribute_names,
            batch_url=url,
        )

    def poke(self, context: Context) -> Any:
        """The non-deferrable path: the trigger's own drain-early receive, run here once."""
        import asyncio

        from airflow.sdk import PokeReturnValue

        trigger = self._trigger(self._max_wait(), None)

        async def drain() -> list[dict[str, Any]]:
            async with await trigger.hook.get_async_conn() as client:
                return await trigger.drain(client, self.wait_time_seconds)

        batch = asyncio.run(drain())
        if not batch:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.store_batch(context, batch))

    def store_batch(self, context: Context, messages: list[dict[str, Any]]) -> dict[str, Any]:
        ti = context["ti"]
        url = batch_url(ti.run_id, ti.try_number, self.batch_prefix)
        write_batch(url, messages)
        self.log.info("Stored a batch of %d message(s) at %s", len(messages), url)
        return batch_reference(url, messages)


def __getattr__(name: str) -> Any:
    # Triggers deferred before the trigger moved to its own module are stored under this path.
    if name == "FollowupsSqsTrigger":
        from leadflow.messaging.trigger import FollowupsSqsTrigger

        return FollowupsSqsTrigger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
