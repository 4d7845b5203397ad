"""Rate limits of the follow-up sends: a global :class:`TokenBucket` and a per-user :class:`UserPacer`.

* the bucket keeps all sends under ``leadflow_followup_send_rate_per_second`` (below Meta's
  80 msg/s per business number);
* the pacer never sends two messages to one user within 6 s (Meta's pair rate limit, error
  131056), also across runs (the ledger's latest ``sent_at`` for the user seeds it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

PAIR_PACING_SECONDS = 6.0


class TokenBucket:
    """A global send-rate limit: ``rate`` tokens per second, at most ``burst`` saved up.

    Reservation style: a caller takes a token (the balance may go negative, i.e. a reservation in
    the future) under the lock and sleeps outside it, so waiting threads do not serialise on the
    lock. ``rate <= 0`` disables the limit.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def acquire(self) -> float:
        """Take one token, waiting if needed; return the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class UserPacer:
    """At most one send per ``interval`` seconds per key (a user), across threads.

    ``slot(key, last_sent)`` holds the key's lock for the duration of the send, so two messages to
    one user never overlap, and starts only ``interval`` after the previous send to that user
    ended (in this process, or at ``last_sent()``, a wall-clock time from the ledger).
    """

    def __init__(
        self,
        interval: float = PAIR_PACING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}

    @contextmanager
    def slot(self, key: str, last_sent: Callable[[], datetime | None] | None = None) -> Iterator[float]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = self._clock()
            not_before = self._last.get(key, float("-inf")) + self.interval
            previous = last_sent() if last_sent is not None else None
            if previous is not None:
                since = (self._wall() - previous).total_seconds()
                not_before = max(not_before, now + self.interval - since)
            wait = max(0.0, not_before - now)
            if wait > 0:
                self._sleep(wait)
            try:
                yield wait
            finally:
                self._last[key] = self._clock()
