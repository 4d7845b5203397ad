"""Which thread runs which message: one lane per buyer, fed as receives arrive.

One buyer's messages run on one thread, one after another. Spread over threads they would queue
on the pacer's lock for that buyer, 6 s each, holding a thread apiece; the worst case of a run
would then grow with the thread count (see :mod:`.budget`). A message that does not parse is a
lane of its own: it has no buyer to wait for. A buyer's messages from a later receive join the
lane already running, so the rule holds across the receives of one run
(:meth:`.processor.FollowupProcessor.process`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from leadflow.followups.contract import FollowupEvent, ValidationFailure, parse_body
from leadflow.messaging.ledger import message_key

# (SQS message, its parsed event or why it did not parse)
Received = tuple[dict[str, Any], FollowupEvent | ValidationFailure]
# Per buyer, the copies of each event, in arrival order.
Grouped = dict[str, list[list[Received]]]


def group_by_buyer(messages: list[dict[str, Any]]) -> Grouped:
    """Parse every message and group them: per buyer, the copies of each event."""
    users: dict[str, dict[str, list[Received]]] = {}
    for message in messages:
        try:
            parsed: FollowupEvent | ValidationFailure = parse_body(message.get("Body"))
            user, key = f"user:{parsed.user_id}", parsed.event_id
        except ValidationFailure as failure:
            parsed = failure
            user = key = message_key(str(message.get("MessageId")))
        users.setdefault(user, {}).setdefault(key, []).append((message, parsed))
    return {user: list(copies.values()) for user, copies in users.items()}


def events_of(users: Grouped) -> list[FollowupEvent]:
    return [p for user in users.values() for copies in user for _, p in copies if isinstance(p, FollowupEvent)]


class BuyerLanes:
    """The lanes of one run on a thread pool, and how many received messages are not finished."""

    def __init__(self, pool: ThreadPoolExecutor, run_copies: Callable[[list[Received]], None]) -> None:
        self._pool = pool
        self._run_copies = run_copies
        self._progress = threading.Condition()
        self._waiting: dict[str, deque[list[Received]]] = {}
        self._unfinished = 0
        self.jobs: list[Future[None]] = []

    @property
    def unfinished(self) -> int:
        with self._progress:
            return self._unfinished

    def dispatch(self, users: Grouped) -> None:
        """Hand each buyer's events to that buyer's running lane, or start one."""
        for user, events in users.items():
            with self._progress:
                self._unfinished += sum(len(copies) for copies in events)
                running = self._waiting.get(user)
                if running is not None:
                    running.extend(events)
                    continue
                self._waiting[user] = deque(events)
            # Each job runs in a copy of this thread's context, so the task's logging context
            # (kept in contextvars) carries over to the worker threads.
            self.jobs.append(self._pool.submit(contextvars.copy_context().run, self._run_lane, user))

    def wait_for_room(self, backlog: int, until: float, stopped: threading.Event) -> None:
        """Block while ``backlog`` or more messages wait or run, up to ``until`` (monotonic) or a stop."""
        with self._progress:
            while self._unfinished >= backlog and not stopped.is_set():
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._progress.wait(timeout=min(left, 1.0))

    def join(self) -> None:
        for job in self.jobs:
            job.result()

    def _run_lane(self, user: str) -> None:
        while True:
            with self._progress:
                queue = self._waiting[user]
                if not queue:
                    del self._waiting[user]
                    return
                copies = queue.popleft()
            try:
                self._run_copies(copies)
            except BaseException:
                with self._progress:  # a later receive must not queue behind a dead lane
                    self._unfinished -= len(copies) + sum(len(c) for c in self._waiting.pop(user))
                    self._progress.notify_all()
                raise
            with self._progress:
                self._unfinished -= len(copies)
                self._progress.notify_all()
