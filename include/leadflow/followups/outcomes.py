"""What became of each message of a batch: one :class:`Outcome` each, counted in :class:`BatchSummary`.

``sent + skipped + duplicates + dead_lettered + left_for_redelivery == received``
(``failed`` events are dead-lettered too, so ``failed`` is a subset of ``dead_lettered``).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_PROBLEM_IDS = 50


class Outcome(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"  # permanent failure: recorded as failed *and* dead-lettered
    LEFT = "left_for_redelivery"


@dataclass
class BatchSummary:
    """Counts of one batch; the ``record_*`` methods are safe to call from the worker threads."""

    received: int = 0
    receives_in_run: int = 0  # times the processing task itself received more (past the sensor's batch)
    sent: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    failed: int = 0
    duplicates: int = 0
    fallbacks: int = 0
    texts_generated: int = 0
    left_for_redelivery: int = 0
    unknown_outcome: int = 0  # ambiguous answers this batch: waiting for a receipt
    resent_after_grace: int = 0
    reopened: int = 0  # events re-evaluated after an earlier skipped / dead_lettered / failed
    errors: int = 0
    sent_as: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    reopened_from: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    problem_event_ids: list[str] = field(default_factory=list)
    # Time-critical events (site-visit reminders), see leadflow.followups.deadlines.
    reminders_sent: int = 0
    reminders_late: int = 0  # sent, but past the deadline's tolerance: alerted
    reminders_expired: int = 0  # the visit started before it could go out: skipped and alerted
    reminder_late_seconds: list[float] = field(default_factory=list)  # every reminder sent, 0 if on time
    late_event_ids: list[str] = field(default_factory=list)
    expired_event_ids: list[str] = field(default_factory=list)
    # Messages re-queued as fresh copies during an account-level outage (their receive count
    # starts again, so SQS never dead-letters them for the outage's length).
    requeued: int = 0
    # Waits (an outage's, or an unknown outcome's grace period) for which SQS refused the fresh
    # copy: the original waits instead and spends one of its receives. A fallback, so counted.
    requeue_fallbacks: int = 0
    fatal_error: str | None = None
    account_error_code: str | None = None
    elapsed_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def needs_alert(self) -> bool:
        return bool(self.dead_lettered or self.failed or self.reminders_late or self.reminders_expired)

    def record_received(self, count: int) -> None:
        with self._lock:
            self.received += count
            self.receives_in_run += 1

    def count(self, outcome: Outcome) -> Outcome:
        with self._lock:
            if outcome is Outcome.SENT:
                self.sent += 1
            elif outcome is Outcome.SKIPPED:
                self.skipped += 1
            elif outcome is Outcome.DUPLICATE:
                self.duplicates += 1
            elif outcome is Outcome.DEAD_LETTERED:
                self.dead_lettered += 1
            elif outcome is Outcome.FAILED:
                self.dead_lettered += 1
                self.failed += 1
            else:
                self.left_for_redelivery += 1
        return outcome

    def record_sent_as(self, mode: str) -> None:
        with self._lock:
            self.sent_as[mode] += 1

    @property
    def fallback_rate(self) -> float:
        """Share of the texts generated this batch that are the template fallback."""
        return self.fallbacks / self.texts_generated if self.texts_generated else 0.0

    def record_text(self, source: str, fallback_reason: str | None) -> None:
        with self._lock:
            self.texts_generated += 1
            if source == "fallback":
                self.fallbacks += 1
                self.fallback_reasons[fallback_reason or "unknown"] += 1

    def record_reminder_sent(self, event_id: str, late_seconds: float, late: bool) -> None:
        with self._lock:
            self.reminders_sent += 1
            self.reminder_late_seconds.append(late_seconds)
            if late:
                self.reminders_late += 1
                self.late_event_ids.append(event_id)

    def record_reminder_expired(self, event_id: str) -> None:
        with self._lock:
            self.reminders_expired += 1
            self.expired_event_ids.append(event_id)

    def record_requeued(self) -> None:
        with self._lock:
            self.requeued += 1

    def record_requeue_fallback(self) -> None:
        with self._lock:
            self.requeue_fallbacks += 1

    def record_skip(self, reason: str) -> None:
        with self._lock:
            self.skip_reasons[reason] += 1

    def record_unknown_outcome(self) -> None:
        with self._lock:
            self.unknown_outcome += 1

    def record_resend(self) -> None:
        with self._lock:
            self.resent_after_grace += 1

    def record_reopened(self, state: str) -> None:
        with self._lock:
            self.reopened += 1
            self.reopened_from[state] += 1

    def record_account_error(self, code: str, detail: str) -> bool:
        """The first account-level error of the batch (True), or a later one (False)."""
        with self._lock:
            if self.account_error_code is not None:
                return False
            self.account_error_code = code
            if self.fatal_error is None:
                self.fatal_error = detail
            return True

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def record_fatal(self, text: str) -> None:
        with self._lock:
            if self.fatal_error is None:
                self.fatal_error = text

    def record_dead_letter(self, reason: str, problem_id: str | None, failure_code: str | None) -> None:
        with self._lock:
            self.dead_letter_reasons[reason] += 1
            if failure_code:
                self.failure_codes[failure_code] += 1
            if problem_id:
                self.problem_event_ids.append(problem_id)

    def as_dict(self) -> dict[str, Any]:
        """Counts and ids only (this goes to XCom and to the alert)."""
        return {
            "received": self.received,
            "receives_in_run": self.receives_in_run,
            "sent": self.sent,
            "skipped": self.skipped,
            "dead_lettered": self.dead_lettered,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "fallbacks": self.fallbacks,
            "texts_generated": self.texts_generated,
            "fallback_rate": round(self.fallback_rate, 4),
            "left_for_redelivery": self.left_for_redelivery,
            "unknown_outcome": self.unknown_outcome,
            "resent_after_grace": self.resent_after_grace,
            "reopened": self.reopened,
            "errors": self.errors,
            "sent_as": dict(self.sent_as),
            "skip_reasons": dict(self.skip_reasons),
            "fallback_reasons": dict(self.fallback_reasons),
            "reopened_from": dict(self.reopened_from),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "failure_codes": dict(self.failure_codes),
            "problem_event_ids": self.problem_event_ids[:MAX_PROBLEM_IDS],
            "reminders_sent": self.reminders_sent,
            "reminders_late": self.reminders_late,
            "reminders_expired": self.reminders_expired,
            "reminder_late_seconds_max": round(max(self.reminder_late_seconds, default=0.0), 3),
            "late_event_ids": self.late_event_ids[:MAX_PROBLEM_IDS],
            "expired_event_ids": self.expired_event_ids[:MAX_PROBLEM_IDS],
            "requeued": self.requeued,
            "requeue_fallbacks": self.requeue_fallbacks,
            "fatal_error": self.fatal_error,
            "account_error_code": self.account_error_code,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }
