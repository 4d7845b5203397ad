"""The SQS (and SNS, S3) stand-in: moto's server, with a queue's attributes computed on access.

moto builds *every* attribute of a queue each time code reads *one*, and three of them count the
queue's messages. Every ``SendMessage`` reads ``ContentBasedDeduplication`` and every message a
``ReceiveMessage`` looks at reads ``MessageRetentionPeriod``, so a send costs O(queue depth) and a
receive O(depth²). With WhatsApp receipts flowing (three per send, into a queue nobody drains
during a benchmark) moto took a whole core of this two-core machine: 12.3 CPU s for 1,000
follow-ups, as much as the pipeline itself (``python -m bench.followups``).

Only the cost changes: each attribute is computed from the same moto property, when it is read,
so every answer (values, errors, which attributes exist) is moto's own.

A standard queue's messages are kept in :class:`devstack.sqs_index.MessageIndex` instead of
moto's list, so a receive costs the same at any queue depth, and the SQS rules moto skips (the
in-flight quota, ``MessageNotInflight``, at most 10 entries per batch) apply.

    python -m devstack.sqs_server -H 127.0.0.1 -p 5055     (moto.server's arguments, plus:)
        --in-flight-limit N   a standard queue's in-flight quota (SQS's: 120,000)
        --moto-receive        keep moto's own list (``python -m bench.sqs_standin``'s "before")
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devstack.sqs_index import IN_FLIGHT_LIMIT, MessageIndex, end_all_delays, end_all_visibility_timeouts


class LazyQueueAttributes(Mapping[str, Any]):
    """A queue's attribute map whose values are read from the queue when looked up."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        self._names = list(dict.fromkeys(names))  # moto's dict keeps a name's first position

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        queue = self._queue
        if name == "Policy" and queue.policy:
            return queue.policy
        if name == "RedrivePolicy" and queue.redrive_policy:
            return json.dumps(queue.redrive_policy)
        from moto.core.utils import camelcase_to_underscores

        value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# How the stand-in replaces moto's methods: ``setattr`` in its own server process; a test that
# serves it in-process passes ``monkeypatch.setattr``, so moto is itself again afterwards.
Assign = Callable[[Any, str, Any], None]


def install(*, index: bool = True, in_flight_limit: int = IN_FLIGHT_LIMIT, assign: Assign = setattr) -> None:
    from moto.sqs.models import Queue

    assign(Queue, "attributes", property(LazyQueueAttributes))
    if index:
        install_index(in_flight_limit, assign)


def use_clock(now: Callable[[], float], assign: Assign = setattr) -> None:
    """Run SQS on another clock (``now``: epoch seconds), for a test that simulates hours in seconds.

    Every timestamp and timer of a message (sent, first received, delay, visibility timeout,
    retention) and of the index is read from ``moto.sqs.models``' two clock functions, so
    replacing them moves all of them together. Only a long poll still waits in real time.
    """
    from moto.sqs import models

    motos_unix_time = models.unix_time

    def unix_time(dt: Any = None) -> float:
        return now() if dt is None else motos_unix_time(dt)

    assign(models, "unix_time", unix_time)
    assign(models, "unix_time_millis", lambda dt=None: unix_time(dt) * 1000)


def install_index(in_flight_limit: int = IN_FLIGHT_LIMIT, assign: Assign = setattr) -> None:
    """Route a standard queue's message operations through a :class:`MessageIndex`."""
    from moto.sqs.constants import MAXIMUM_VISIBILITY_TIMEOUT
    from moto.sqs.exceptions import (
        BatchEntryIdsNotDistinct,
        InvalidParameterValue,
        SQSException,
        TooManyEntriesInBatchRequest,
    )
    from moto.sqs.models import Queue, SQSBackend

    motos_init = Queue.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        motos_init(self, *args, **kwargs)
        self.message_index = None if self.fifo_queue else MessageIndex(in_flight_limit)

    def per_queue(motos: Callable[..., Any], indexed: Callable[..., Any]) -> Callable[..., Any]:
        def operation(self: Any, *args: Any, **kwargs: Any) -> Any:
            index = self.message_index
            return motos(self, *args, **kwargs) if index is None else indexed(index, self, *args, **kwargs)

        return operation

    def per_named_queue(motos: Callable[..., Any], indexed: Callable[..., Any]) -> Callable[..., Any]:
        def operation(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
            queue = backend.get_queue(queue_name)
            if queue.message_index is None:
                return motos(backend, queue_name, *args, **kwargs)
            return indexed(queue.message_index, queue, *args, **kwargs)

        return operation

    def counted(position: int, motos: property) -> property:
        return property(per_queue(motos.fget, lambda index, _queue: index.counts()[position]))  # type: ignore[arg-type]

    def at_most_ten(motos: Callable[..., Any]) -> Callable[..., Any]:
        """SQS refuses a batch of more than 10 entries or with a repeated entry Id; moto did not check."""

        def operation(backend: Any, queue_name: str, entries: list[dict[str, Any]]) -> Any:
            if len(entries) > 10:
                raise TooManyEntriesInBatchRequest(len(entries))
            repeated = backend._get_first_duplicate_id([entry["Id"] for entry in entries])
            if repeated:
                raise BatchEntryIdsNotDistinct(repeated)
            return motos(backend, queue_name, entries)

        return operation

    def change_visibility_batch(index: MessageIndex, _queue: Any, entries: list[dict[str, Any]]) -> Any:
        """Each entry succeeds or fails on its own, with the error SQS gives (MessageNotInflight too)."""
        succeeded, failed = [], []
        for entry in entries:
            try:
                timeout = int(entry["VisibilityTimeout"])
                if not 0 <= timeout <= MAXIMUM_VISIBILITY_TIMEOUT:
                    raise InvalidParameterValue("Visibility timeout invalid")
                index.change_visibility(entry["ReceiptHandle"], timeout)
            except SQSException as error:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": error.code, "Message": error.message})
            else:
                succeeded.append(entry["Id"])
        return succeeded, failed

    motos_purge = SQSBackend.purge_queue

    def purge_queue(backend: Any, queue_name: str) -> None:
        motos_purge(backend, queue_name)  # keeps moto's once-a-minute check
        index = backend.get_queue(queue_name).message_index
        if index is not None:
            index.purge()

    assign(Queue, "__init__", __init__)
    assign(Queue, "add_message", per_queue(Queue.add_message, lambda index, _queue, message: index.add(message)))
    assign(Queue, "delete_message", per_queue(Queue.delete_message, lambda index, _queue, handle: index.delete(handle)))
    assign(Queue, "messages", property(per_queue(Queue.messages.fget, lambda index, _queue: index.visible_messages())))  # type: ignore[attr-defined]
    for position, suffix in enumerate(("", "_not_visible", "_delayed")):  # the order of MessageIndex.counts
        name = f"approximate_number_of_messages{suffix}"
        assign(Queue, name, counted(position, getattr(Queue, name)))

    def receive(index: MessageIndex, queue: Any, count: int, wait: int, visibility: int, names: Any = None) -> Any:
        return index.receive(queue, count, wait, visibility, names or [])

    assign(SQSBackend, "receive_message", per_named_queue(SQSBackend.receive_message, receive))

    def change_visibility(index: MessageIndex, _queue: Any, receipt_handle: str, visibility_timeout: Any) -> None:
        index.change_visibility(receipt_handle, int(visibility_timeout))

    motos_change = SQSBackend.change_message_visibility
    assign(SQSBackend, "change_message_visibility", per_named_queue(motos_change, change_visibility))
    assign(SQSBackend, "purge_queue", purge_queue)
    assign(SQSBackend, "delete_message_batch", at_most_ten(SQSBackend.delete_message_batch))
    assign(
        SQSBackend,
        "change_message_visibility_batch",
        at_most_ten(per_named_queue(SQSBackend.change_message_visibility_batch, change_visibility_batch)),
    )


@dataclass(frozen=True)
class RunningServer:
    endpoint: str
    pid: int

    def client(self, service: str = "sqs") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextlib.contextmanager
def running_sqs_server(*options: str) -> Iterator[RunningServer]:
    """A stand-in of its own on a free port (``options`` as ``main`` takes them), for tests and benchmarks."""
    from devstack.services import HOST, STARTUP_TIMEOUT_S, free_port

    port = free_port()
    command = [sys.executable, "-m", "devstack.sqs_server", "-H", HOST, "-p", str(port), *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    endpoint = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(f"{endpoint}/moto-api/"):
            if server.poll() is not None:
                raise RuntimeError(f"the SQS stand-in exited with {server.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SQS stand-in did not answer on {endpoint} in {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        yield RunningServer(endpoint, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(url: str) -> bool:
    import requests

    try:
        return bool(requests.get(url, timeout=1).ok)
    except requests.ConnectionError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--in-flight-limit", type=int, default=IN_FLIGHT_LIMIT)
    parser.add_argument("--moto-receive", action="store_true")
    ours, motos_arguments = parser.parse_known_args(argv)
    install(index=not ours.moto_receive, in_flight_limit=ours.in_flight_limit)
    if not ours.moto_receive:
        # SIGUSR1: every in-flight message visible now (devstack/chaos.py's clock jump). A thread of
        # its own: the handler runs between two bytecodes of the main thread, which takes no lock.
        signal.signal(
            signal.SIGUSR1, lambda *_: threading.Thread(target=end_all_visibility_timeouts, daemon=True).start()
        )
        # SIGUSR2: every delayed message visible now (a test's "time passes" for chosen waits).
        signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=end_all_delays, daemon=True).start())
    from moto.server import main as moto_main

    moto_main(motos_arguments)


if __name__ == "__main__":
    main()
