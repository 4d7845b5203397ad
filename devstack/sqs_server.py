"""The SQS (and SNS, S3) stand-in: moto's server, with a queue's attributes computed on access.

moto builds *every* attribute of a queue each time code reads *one*, and three of them count the
queue's messages. Every ``SendMessage`` reads ``ContentBasedDeduplication`` and every message a
``ReceiveMessage`` looks at reads ``MessageRetentionPeriod``, so a send costs O(queue depth) and a
receive O(depth²). With WhatsApp receipts flowing (three per send, into a queue nobody drains
during a benchmark) moto took a whole core of this two-core machine: 12.3 CPU s for 1,000
follow-ups, as much as the pipeline itself (``python -m bench.followups``).

Only the cost changes: each attribute is computed from the same moto property, when it is read,
so every answer (values, errors, which attributes exist) is moto's own.

    python -m devstack.sqs_server -H 127.0.0.1 -p 5055     (moto.server's arguments)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any


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


def install() -> None:
    from moto.sqs.models import Queue

    Queue.attributes = property(LazyQueueAttributes)  # type: ignore[assignment,method-assign]


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()
