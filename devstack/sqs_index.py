"""A standard SQS queue's messages indexed by where each one stands, for the SQS stand-in.

moto keeps a queue's messages in one list: every ReceiveMessage rebuilds the list of visible
messages, and DeleteMessage, ChangeMessageVisibility and each ApproximateNumberOfMessages*
walk all of them, so a call costs O(queue depth) — a receive of 10 took 12 ms at 1,000 queued
messages and 1.5 s at 100,000 (``python -m bench.sqs_standin``) — where SQS's cost does not grow
with the backlog. A benchmark then measures the stand-in, not our code.

Here a message is in one of three places: *ready* (visible, oldest first), or waiting on a timer
in a heap ordered by the time it becomes visible — *delayed* (``DelaySeconds`` after a send) or
*in flight* (after a receive, until its visibility timeout ends or it is deleted). A receive
releases the timers that are due and takes from the front of the ready messages; deletes and
visibility changes find their message by receipt handle. Every operation costs O(log depth).

Only standard queues are indexed (our queues are standard); FIFO queues keep moto's own path.
The message objects, their receipt handles, MD5s and attributes are moto's; what changes is
where they are kept and the SQS rules moto does not apply (each checked against AWS's API
reference and quotas page):

* the in-flight quota: "approximately 120,000" per standard queue; at the quota a short poll
  fails with ``OverLimit`` and a long poll returns no messages and no error;
* ``ChangeMessageVisibility`` on a message that is not in flight (its timeout ended, or it was
  received again since that receipt handle was issued) fails with ``MessageNotInflight``; the
  12-hour maximum counts from the receive, as AWS's example does (moto counted from the send);
* ``DeleteMessage`` with an outdated receipt handle succeeds without deleting ("you must provide
  the most recently received receipt handle ... otherwise, the request succeeds, but the
  message might not be deleted" — the stand-in takes the strict reading);
* a receive with ``VisibilityTimeout=0`` never hands one message out twice in one answer.

Lambda event source mappings on standard queues (a moto feature nothing here uses) are not served.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass
from enum import Enum

from moto.sqs import models as moto_sqs
from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid, SQSException
from moto.sqs.models import Message, Queue, _filter_message_attributes

# AWS's documented quota for a standard queue ("approximately 120,000 in flight messages").
IN_FLIGHT_LIMIT = 120_000
MAX_TOTAL_VISIBILITY_MS = 43_200 * 1000  # 12 hours
# Every index of this process, for :func:`end_all_visibility_timeouts`.
_INDEXES: weakref.WeakSet[MessageIndex] = weakref.WeakSet()


def end_all_visibility_timeouts() -> int:
    """Make every in-flight message of every queue visible now, as if its visibility timeout had
    ended: the chaos run's stand-in for waiting out the 20 minutes after a consumer died holding
    messages (devstack/chaos.py). How many messages came back."""
    return sum(index.end_visibility_timeouts() for index in list(_INDEXES))


def end_all_delays() -> int:
    """Make every delayed message of every queue visible now, as if its ``DelaySeconds`` had
    passed: a test's "time passes" for the waits the processor chose (fresh delayed copies,
    leadflow.followups.requeue). How many messages came out."""
    return sum(index.end_delays() for index in list(_INDEXES))


def _now_ms() -> float:
    """moto's SQS clock, read where moto's messages read it: their timestamps and these timers
    must agree, and a test may move that clock (``devstack.sqs_server.use_clock``)."""
    return moto_sqs.unix_time_millis()


class OverLimit(SQSException):
    code = "OverLimit"


class MessageNotInflight(SQSException):
    code = "MessageNotInflight"


class Place(Enum):
    READY = "ready"
    DELAYED = "delayed"
    IN_FLIGHT = "in flight"


@dataclass
class Entry:
    message: Message
    place: Place
    timer: int = -1  # the sequence number of its live heap entry; older ones are skipped
    received_at_ms: float = 0.0


class MessageIndex:
    """The messages of one standard queue; every method takes the index's lock."""

    def __init__(self, in_flight_limit: int = IN_FLIGHT_LIMIT) -> None:
        self.in_flight_limit = in_flight_limit
        self.changed = threading.Condition()
        self._entries: dict[str, Entry] = {}
        self._ready: OrderedDict[str, Message] = OrderedDict()
        self._timers: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._by_handle: dict[str, Message] = {}  # each message's latest receipt handle
        self._outdated_handles: set[str] = set()  # earlier handles of messages still here
        self._deleted_handles: set[str] = set()  # deleting again succeeds, as on SQS
        self.in_flight = 0
        self.delayed = 0
        _INDEXES.add(self)

    # --- what moves a message -------------------------------------------------------------

    def add(self, message: Message) -> None:
        with self.changed:
            now = _now_ms()
            if message.delayed_until > now:
                entry = Entry(message, Place.DELAYED)
                self.delayed += 1
                self._entries[message.id] = entry
                self._start_timer(entry, message.delayed_until)
            else:
                self._entries[message.id] = Entry(message, Place.READY)
                self._ready[message.id] = message
            self.changed.notify_all()

    def receive(
        self, queue: Queue, count: int, wait_seconds: int, visibility_timeout: int, attribute_names: list[str]
    ) -> list[Message]:
        """Up to ``count`` visible messages, waiting up to ``wait_seconds`` for the first one."""
        deadline = time.monotonic() + wait_seconds
        while True:
            with self.changed:
                handed_out, to_dead_letter = self._take(queue, count, visibility_timeout, long_poll=wait_seconds > 0)
                if not handed_out and not to_dead_letter:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self.changed.wait(min(remaining, self._seconds_to_next_timer()))
                    continue
            for message in to_dead_letter:  # outside this queue's lock: the DLQ takes its own
                queue.dead_letter_queue.add_message(message)  # type: ignore[union-attr]
            if handed_out:
                copies = []
                for message in handed_out:
                    copy = deepcopy(message)  # moto filters attributes on a copy, not the stored message
                    _filter_message_attributes(copy, attribute_names)
                    copies.append(copy)
                return copies

    def delete(self, receipt_handle: str) -> None:
        with self.changed:
            message = self._by_handle.get(receipt_handle)
            if message is None:
                if receipt_handle in self._outdated_handles or receipt_handle in self._deleted_handles:
                    return
                raise ReceiptHandleIsInvalid()
            self._forget(message)
            self.changed.notify_all()  # room under the in-flight quota for a waiting long poll

    def change_visibility(self, receipt_handle: str, visibility_timeout: int) -> None:
        with self.changed:
            now = _now_ms()
            self._release_due(now)
            message = self._by_handle.get(receipt_handle)
            if message is None:
                if receipt_handle in self._outdated_handles:
                    raise MessageNotInflight("The specified message isn't in flight.")
                raise ReceiptHandleIsInvalid()
            entry = self._entries[message.id]
            if entry.place is not Place.IN_FLIGHT:
                raise MessageNotInflight("The specified message isn't in flight.")
            if now + visibility_timeout * 1000 - entry.received_at_ms > MAX_TOTAL_VISIBILITY_MS:
                raise InvalidParameterValue(
                    f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: Total "
                    "VisibilityTimeout for the message is beyond the limit [43200 seconds]"
                )
            message.change_visibility(visibility_timeout)
            if visibility_timeout:
                self._start_timer(entry, message.visible_at)
            else:
                self._make_ready(entry)
                self.changed.notify_all()

    def end_visibility_timeouts(self) -> int:
        with self.changed:
            released = [entry for entry in self._entries.values() if entry.place is Place.IN_FLIGHT]
            for entry in released:
                self._make_ready(entry)
            self.changed.notify_all()
            return len(released)

    def end_delays(self) -> int:
        with self.changed:
            released = [entry for entry in self._entries.values() if entry.place is Place.DELAYED]
            for entry in released:
                entry.message.delayed_until = 0
                self._make_ready(entry)
            self.changed.notify_all()
            return len(released)

    def purge(self) -> None:
        with self.changed:
            for entry in list(self._entries.values()):
                self._forget(entry.message)
            self._timers.clear()

    # --- what is read -----------------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """(visible, in flight, delayed): ApproximateNumberOfMessages, ...NotVisible, ...Delayed."""
        with self.changed:
            self._release_due(_now_ms())
            return len(self._ready), self.in_flight, self.delayed

    def visible_messages(self) -> list[Message]:
        with self.changed:
            self._release_due(_now_ms())
            return list(self._ready.values())

    # --- internals (the lock is held) -------------------------------------------------------

    def _take(
        self, queue: Queue, count: int, visibility_timeout: int, *, long_poll: bool
    ) -> tuple[list[Message], list[Message]]:
        now = _now_ms()
        self._release_due(now)
        room = self.in_flight_limit - self.in_flight
        if room <= 0 and visibility_timeout:
            if not long_poll:
                raise OverLimit(f"The maximum number of in flight messages ({self.in_flight_limit}) has been reached.")
            return [], []
        wanted = min(count, room) if visibility_timeout else count
        retention_ms = int(queue.message_retention_period) * 1000  # type: ignore[attr-defined]
        max_receives = self._max_receive_count(queue)
        handed_out: list[Message] = []
        to_dead_letter: list[Message] = []
        handed_ids: set[str] = set()
        while self._ready and len(handed_out) < wanted:
            message_id, message = self._ready.popitem(last=False)
            if message_id in handed_ids:  # back round to one handed out with visibility 0
                self._ready[message_id] = message
                self._ready.move_to_end(message_id, last=False)
                break
            entry = self._entries[message_id]
            if message.sent_timestamp + retention_ms <= now:  # type: ignore[operator]
                self._forget(message)
                continue
            if max_receives is not None and message.approximate_receive_count >= max_receives:
                self._forget(message)
                to_dead_letter.append(message)
                continue
            previous_handle = message.receipt_handle
            message.mark_received(visibility_timeout=visibility_timeout)
            if previous_handle is not None and self._by_handle.pop(previous_handle, None) is not None:
                self._outdated_handles.add(previous_handle)
            self._by_handle[message.receipt_handle] = message  # type: ignore[index]
            entry.received_at_ms = now
            if visibility_timeout:
                entry.place = Place.IN_FLIGHT
                self.in_flight += 1
                self._start_timer(entry, message.visible_at)
            else:
                self._ready[message_id] = message
            handed_out.append(message)
            handed_ids.add(message_id)
        return handed_out, to_dead_letter

    @staticmethod
    def _max_receive_count(queue: Queue) -> int | None:
        if queue.dead_letter_queue is None or not queue.redrive_policy:  # type: ignore[attr-defined]
            return None
        return int(queue.redrive_policy["maxReceiveCount"])  # type: ignore[attr-defined]

    def _start_timer(self, entry: Entry, due_ms: float) -> None:
        entry.timer = next(self._sequence)
        heapq.heappush(self._timers, (due_ms, entry.timer, entry.message.id))

    def _release_due(self, now_ms: float) -> None:
        while self._timers and self._timers[0][0] <= now_ms:
            _, timer, message_id = heapq.heappop(self._timers)
            entry = self._entries.get(message_id)
            if entry is not None and entry.timer == timer and entry.place is not Place.READY:
                self._make_ready(entry)

    def _make_ready(self, entry: Entry) -> None:
        if entry.place is Place.IN_FLIGHT:
            self.in_flight -= 1
        elif entry.place is Place.DELAYED:
            self.delayed -= 1
        entry.place = Place.READY
        entry.timer = -1
        self._ready[entry.message.id] = entry.message

    def _forget(self, message: Message) -> None:
        entry = self._entries.pop(message.id)
        if entry.place is Place.READY:
            self._ready.pop(message.id, None)  # a receive has already taken it off the front
        elif entry.place is Place.IN_FLIGHT:
            self.in_flight -= 1
        else:
            self.delayed -= 1
        handle = message.receipt_handle
        if handle is not None and self._by_handle.pop(handle, None) is not None:
            self._deleted_handles.add(handle)

    def _seconds_to_next_timer(self) -> float:
        if not self._timers:
            return 1.0  # woken by add/delete/visibility changes; the bound only guards a missed one
        return max(0.001, (self._timers[0][0] - _now_ms()) / 1000)
