"""Process one batch of follow-up messages received from SQS.

Concurrency model: one Airflow task processes the whole batch (up to a few hundred messages)
with a bounded :class:`~concurrent.futures.ThreadPoolExecutor`. The work per message is almost
all waiting on the network (OpenAI ~0.5 s, WhatsApp ~0.1 s, Mongo, SQS), which threads overlap
well; one task instance per message would instead pay Airflow's scheduling and process start-up
(seconds) for every message and could never reach WhatsApp's 80 msg/s. Three limits keep the
threads polite:

* ``concurrency`` threads at most (Variable ``leadflow_followup_concurrency``);
* a global :class:`TokenBucket` on WhatsApp sends (Variable ``leadflow_followup_send_rate_per_second``,
  below Meta's 80 msg/s per business number);
* a per-user :class:`UserPacer`: never two messages to one user within 6 s (Meta's pair rate limit,
  error 131056), also across runs (the ledger's latest ``sent_at`` for the user seeds it).

Round trips are kept few, because at 80 msg/s they add up: what every message needs to read
(ledger snapshot, users, the 24 h window, the last send per user) is fetched for the whole batch
in a few bulk queries, each message then costs three ledger writes (claim, sending, sent), and
SQS deletes go out ten at a time.

Every message ends in exactly one outcome, counted in :class:`BatchSummary`:
``sent + skipped + duplicates + dead_lettered + left_for_redelivery == received``
(``failed`` events are dead-lettered too, so ``failed`` is a subset of ``dead_lettered``).
The SQS message is deleted (or moved to the DLQ) only after the ledger records its outcome; see
:mod:`leadflow.followups.ledger` for the ordering that gives at most one send per event.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from leadflow.config import DEFAULT_OPENAI_MODEL, DELIVERIES, INTERACTIONS, USERS
from leadflow.followups.contract import FollowupEvent, ValidationFailure, parse_body
from leadflow.followups.ledger import FINAL_STATES, UNKNOWN_OUTCOME, Ledger, State, message_key
from leadflow.followups.personalise import Personaliser, QuotaExhausted, prompt_data
from leadflow.followups.whatsapp import (
    SendMode,
    Template,
    WhatsAppClient,
    WhatsAppError,
    media_payload,
    template_payload,
    text_payload,
)
from leadflow.phones import mask, to_e164

log = logging.getLogger(__name__)

PAIR_PACING_SECONDS = 6.0
# The customer-service window is 24 h from the user's last message; our copy of that message is
# written a moment after Meta received it, so stay a little on the safe side.
SERVICE_WINDOW = timedelta(hours=24) - timedelta(minutes=5)
MAX_PROBLEM_IDS = 50
MAX_REDELIVERY_DELAY_S = 900
USER_FIELDS = {"name": 1, "mobile": 1, "preferred_configuration": 1, "inquiry_type": 1, "whatsapp_opt_in": 1}
PREFETCH_CHUNK = 500
SQS_BATCH = 10  # the most SQS accepts in one batch call


def _chunks(items: list[Any], size: int = PREFETCH_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Outcome(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"  # permanent failure: recorded as failed *and* dead-lettered
    LEFT = "left_for_redelivery"


# --------------------------------------------------------------------------------------------
# Settings and summary


@dataclass(frozen=True)
class TemplateConfig:
    templates: dict[str, Template]

    @classmethod
    def parse(cls, raw: str | dict[str, Any] | None) -> TemplateConfig:
        """``{"language": "en", "templates": {event_type: name | {"name", "language", "media_header"}}}``."""
        data = json.loads(raw) if isinstance(raw, str) else (raw or {})
        language = str(data.get("language") or "en")
        templates: dict[str, Template] = {}
        for event_type, spec in (data.get("templates") or {}).items():
            if isinstance(spec, str):
                templates[event_type] = Template(spec, language)
            elif isinstance(spec, dict) and spec.get("name"):
                templates[event_type] = Template(
                    str(spec["name"]), str(spec.get("language") or language), bool(spec.get("media_header"))
                )
        return cls(templates)


@dataclass(frozen=True)
class ProcessorSettings:
    queue_url: str
    dlq_url: str
    templates: TemplateConfig
    concurrency: int = 16
    send_rate_per_second: float = 60.0
    pacing_seconds: float = PAIR_PACING_SECONDS
    # Stop *starting* messages after this long; the rest go straight back to the queue. Together
    # with the per-message worst case it bounds the run, which the visibility timeout must exceed.
    budget_seconds: float = 600.0
    redelivery_delay_seconds: int = 60


@dataclass
class BatchSummary:
    received: int = 0
    sent: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    failed: int = 0
    duplicates: int = 0
    fallbacks: int = 0
    left_for_redelivery: int = 0
    errors: int = 0
    sent_as: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    failure_codes: Counter[str] = field(default_factory=Counter)
    problem_event_ids: list[str] = field(default_factory=list)
    fatal_error: str | None = None
    elapsed_seconds: float = 0.0

    @property
    def needs_alert(self) -> bool:
        return bool(self.dead_lettered or self.failed)

    def as_dict(self) -> dict[str, Any]:
        """Counts and ids only (this goes to XCom and to the alert)."""
        return {
            "received": self.received,
            "sent": self.sent,
            "skipped": self.skipped,
            "dead_lettered": self.dead_lettered,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "fallbacks": self.fallbacks,
            "left_for_redelivery": self.left_for_redelivery,
            "errors": self.errors,
            "sent_as": dict(self.sent_as),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "failure_codes": dict(self.failure_codes),
            "problem_event_ids": self.problem_event_ids[:MAX_PROBLEM_IDS],
            "fatal_error": self.fatal_error,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


# --------------------------------------------------------------------------------------------
# Rate limits


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


# --------------------------------------------------------------------------------------------
# The processor


def _opt_in(value: Any) -> bool | None:
    """True/False, or None when the stored value cannot be read as consent either way."""
    if value is None or value is True:
        return True
    if value is False:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "y"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "n"):
        return False
    if isinstance(value, int):
        return bool(value)
    return None


class FollowupProcessor:
    def __init__(
        self,
        *,
        db: Database,
        sqs: Any,
        personaliser: Personaliser,
        whatsapp: WhatsAppClient,
        settings: ProcessorSettings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.sqs = sqs
        self.personaliser = personaliser
        self.whatsapp = whatsapp
        self.settings = settings
        self.ledger = Ledger(db[DELIVERIES])
        self.users = db[USERS]
        self.interactions = db[INTERACTIONS]
        self.now = now
        self.rate = TokenBucket(settings.send_rate_per_second)
        self.pacer = UserPacer(settings.pacing_seconds)
        self._summary = BatchSummary()
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._deadline = float("inf")
        self._known_docs: dict[str, dict[str, Any]] = {}
        self._users: dict[ObjectId, dict[str, Any]] = {}
        self._last_user_message: dict[ObjectId, datetime] = {}
        self._last_sent: dict[str, datetime] = {}
        self._delete_lock = threading.Lock()
        self._pending_deletes: list[dict[str, Any]] = []

    # -- batch -------------------------------------------------------------------------------

    def process(self, messages: list[dict[str, Any]]) -> BatchSummary:
        started = time.monotonic()
        self._summary = BatchSummary(received=len(messages))
        self._abort.clear()
        self._deadline = started + self.settings.budget_seconds
        self.ledger.ensure_indexes()
        groups = self._group(messages)
        self._prefetch(groups)
        workers = max(1, min(self.settings.concurrency, len(groups)))
        try:
            if workers == 1:
                for group in groups:
                    self._run_group(group)
            else:
                # Each job runs in a copy of this thread's context, so the task's logging context
                # (kept in contextvars) carries over to the worker threads.
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="followup") as pool:
                    jobs = [pool.submit(contextvars.copy_context().run, self._run_group, g) for g in groups]
                    for job in jobs:
                        job.result()
        finally:
            self._flush_deletes()
        self._summary.elapsed_seconds = time.monotonic() - started
        log.info("Batch done: %s", self._summary.as_dict())
        return self._summary

    def _group(self, messages: list[dict[str, Any]]) -> list[list[tuple[dict[str, Any], Any]]]:
        """Parse every message; copies of one event form one group, handled one after another."""
        groups: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for message in messages:
            try:
                parsed: FollowupEvent | ValidationFailure = parse_body(message.get("Body"))
                key = parsed.event_id
            except ValidationFailure as failure:
                parsed, key = failure, message_key(str(message.get("MessageId")))
            groups.setdefault(key, []).append((message, parsed))
        return list(groups.values())

    def _prefetch(self, groups: list[list[tuple[dict[str, Any], Any]]]) -> None:
        """Read what every message needs in a few bulk queries instead of four per message.

        Only reads: the ledger documents (a snapshot, used to short-cut duplicates and reuse
        stored texts; every decision that matters is still an atomic, state-guarded write), the
        users, each user's latest message to us (the 24 h window) and latest send (pacing).
        """
        events = [parsed for group in groups for _, parsed in group if isinstance(parsed, FollowupEvent)]
        keys = list({e.event_id for e in events})
        user_ids = list({e.user_object_id for e in events})
        self._known_docs = {}
        self._users = {}
        self._last_user_message = {}
        self._last_sent = {}
        since = self.now() - SERVICE_WINDOW - timedelta(minutes=10)
        for chunk in _chunks(keys):
            self._known_docs.update((d["_id"], d) for d in self.ledger.collection.find({"_id": {"$in": chunk}}))
        for chunk in _chunks(user_ids):
            self._users.update((u["_id"], u) for u in self.users.find({"_id": {"$in": chunk}}, projection=USER_FIELDS))
            as_text = [str(u) for u in chunk]
            # Only messages inside the window matter (index user_id, role, timestamp).
            recent = self.interactions.find(
                {"user_id": {"$in": chunk + as_text}, "role": "user", "timestamp": {"$gte": since}},
                projection={"_id": 0, "user_id": 1, "timestamp": 1},
            )
            for row in recent:
                stamp, uid = row.get("timestamp"), row.get("user_id")
                if not isinstance(stamp, datetime) or not ObjectId.is_valid(uid):
                    continue
                oid = ObjectId(str(uid))
                stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
                previous = self._last_user_message.get(oid)
                self._last_user_message[oid] = stamp if previous is None else max(previous, stamp)
            self._last_sent.update(self.ledger.last_sent_by_user(as_text))

    def _run_group(self, group: list[tuple[dict[str, Any], Any]]) -> None:
        first_outcome = self._run_one(*group[0])
        for message, parsed in group[1:]:
            if first_outcome is Outcome.LEFT:
                # The first copy stays in the queue for redelivery; this one is surplus.
                self._delete(message)
                self._count(Outcome.DUPLICATE)
            else:
                if isinstance(parsed, FollowupEvent):  # the snapshot predates the first copy
                    fresh = self.ledger.get(parsed.event_id)
                    if fresh is not None:
                        self._known_docs[parsed.event_id] = fresh
                self._run_one(message, parsed)

    def _run_one(self, message: dict[str, Any], parsed: Any) -> Outcome:
        if self._abort.is_set() or time.monotonic() > self._deadline:
            self._leave(message, delay=0)
            return self._count(Outcome.LEFT)
        try:
            return self._handle(message, parsed)
        except Exception:
            # Infrastructure trouble (Mongo, SQS): leave the message for redelivery, fail the task
            # at the end of the batch so the failure alert fires.
            log.exception("Unexpected error on SQS message %s; leaving it for redelivery", message.get("MessageId"))
            with self._lock:
                self._summary.errors += 1
            return self._count(Outcome.LEFT)

    # -- one message -------------------------------------------------------------------------

    def _handle(self, message: dict[str, Any], parsed: Any) -> Outcome:
        if isinstance(parsed, ValidationFailure):
            key = parsed.event_id or message_key(str(message["MessageId"]))
            return self._dead_letter_new(message, key, parsed.reason, parsed.detail, event_id=parsed.event_id)
        event: FollowupEvent = parsed
        key = event.event_id
        existing = self._known_docs.get(key)
        if existing is not None and existing.get("state") != State.PENDING:
            return self._resolve_existing(message, existing)

        user = self._users.get(event.user_object_id)
        if user is None:
            return self._dead_letter_new(message, key, "unknown_user", "no such user", event=event)
        consent = _opt_in(user.get("whatsapp_opt_in"))
        if consent is not True:
            reason = "opted_out" if consent is False else "opt_in_unreadable"
            recorded, doc = self.ledger.finish(
                key,
                State.SKIPPED,
                sqs_message_id=message["MessageId"],
                reason=reason,
                event_id=key,
                event_type=event.event_type.value,
                user_id=event.user_id,
            )
            if not recorded and doc is not None:
                return self._resolve_existing(message, doc)
            log.info("Event %s skipped (%s)", key, reason)
            self._delete(message)
            return self._count(Outcome.SKIPPED)
        phone = to_e164(user.get("mobile"))
        if phone is None:
            return self._dead_letter_new(
                message,
                key,
                "invalid_phone",
                f"mobile {mask(user.get('mobile'))} is not a valid number",
                event=event,
            )

        # The text: reuse the one stored by an earlier attempt, else generate and claim.
        generated_fallback = False
        if existing is None or not existing.get("text"):
            data = prompt_data(event.event_type, user, event.scheduled_at)
            try:
                result = self.personaliser.personalise(data)
            except QuotaExhausted:
                return self._dead_letter_new(
                    message,
                    key,
                    "openai_insufficient_quota",
                    "OpenAI quota exhausted",
                    event=event,
                    state=State.FAILED,
                    error_code=QuotaExhausted.code,
                )
            doc = self.ledger.claim(
                key,
                event_type=event.event_type.value,
                user_id=event.user_id,
                text=result.text,
                text_source=result.source,
                fallback_reason=result.fallback_reason,
                sqs_message_id=message["MessageId"],
                openai_usage=result.usage,  # openai_usage hook
            )
            generated_fallback = result.source == "fallback" and doc.get("text") == result.text
            if doc.get("state") != State.PENDING:
                return self._resolve_existing(message, doc)
        else:
            doc = existing
        if generated_fallback:
            with self._lock:
                self._summary.fallbacks += 1
        return self._send(message, event, phone, str(doc["text"]))

    def _send(self, message: dict[str, Any], event: FollowupEvent, phone: str, text: str) -> Outcome:
        key = event.event_id
        with self.pacer.slot(event.user_id, lambda: self._last_sent.get(event.user_id)):
            if self._abort.is_set():
                self._leave(message, delay=0)
                return self._count(Outcome.LEFT)
            payload, mode = self._payload(event, phone, text, self._window_open(event.user_object_id))
            if payload is None:
                return self._fail_before_send(
                    message, event, "no_template", f"no WhatsApp template configured for {event.event_type}"
                )
            self.rate.acquire()
            if not self.ledger.mark_sending(key):
                # Another copy of this event got there first (or it is no longer pending).
                doc = self.ledger.get(key)
                return self._resolve_existing(message, doc) if doc else self._count(Outcome.LEFT)
            try:
                wamid = self.whatsapp.send(payload)
            except WhatsAppError as error:
                return self._after_send_error(message, event, phone, error)
            self.ledger.mark_sent(key, wamid=wamid, send_mode=mode)
        log.info("Event %s sent to %s as %s (wamid %s)", key, mask(phone), mode, wamid)
        self._delete(message)
        with self._lock:
            self._summary.sent_as[mode] += 1
        return self._count(Outcome.SENT)

    def _after_send_error(
        self, message: dict[str, Any], event: FollowupEvent, phone: str, error: WhatsAppError
    ) -> Outcome:
        key, code = event.event_id, error.code_str
        if error.fatal:
            self.ledger.release(key, error_code=code)
            with self._lock:
                self._summary.fatal_error = f"WhatsApp rejected the credentials (code {code})"
            self._abort.set()
            log.error("WhatsApp credentials rejected (code %s); stopping the batch", code)
            self._leave(message, delay=0)
            return self._count(Outcome.LEFT)
        if error.transient:
            self.ledger.release(key, error_code=code)
            log.warning(
                "Event %s to %s: transient error %s outlasted the retries; left for redelivery", key, mask(phone), code
            )
            self._leave(message)
            return self._count(Outcome.LEFT)
        reason = f"WhatsApp error {code} (HTTP {error.status})"
        self.ledger.fail_send(key, error_code=code, reason=reason)
        log.error("Event %s to %s: permanent error %s; dead-lettering", key, mask(phone), code)
        return self._dead_letter(
            message, key, f"send_failed_{code}", reason, event_id=key, outcome=Outcome.FAILED, failure_code=code
        )

    def _fail_before_send(self, message: dict[str, Any], event: FollowupEvent, code: str, detail: str) -> Outcome:
        return self._dead_letter_new(
            message, event.event_id, code, detail, event=event, state=State.FAILED, error_code=code
        )

    def _payload(
        self, event: FollowupEvent, phone: str, text: str, window_open: bool
    ) -> tuple[dict[str, Any] | None, SendMode]:
        media = event.media
        if window_open:
            if media is not None:
                caption = f"{text} {media.caption}" if media.caption else text
                return media_payload(phone, media.type, media.url, caption), "media"
            return text_payload(phone, text), "text"
        template = self.settings.templates.templates.get(event.event_type.value)
        if template is None:
            return None, "template"
        media_ref = (media.type, media.url) if media is not None else None
        return template_payload(phone, template, text, media_ref), "template"

    def _window_open(self, user_id: ObjectId) -> bool:
        """Whether the user's latest message to us is recent enough for free-form messages."""
        stamp = self._last_user_message.get(user_id)
        if stamp is None:
            return False
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        age = self.now() - stamp
        return timedelta(0) - timedelta(minutes=5) <= age < SERVICE_WINDOW

    # -- ledger states found on arrival ------------------------------------------------------

    def _resolve_existing(self, message: dict[str, Any], doc: dict[str, Any]) -> Outcome:
        key, state = doc["_id"], doc.get("state")
        if state == State.SENDING:
            # A previous attempt crashed between claiming the send and recording its result: the
            # message may have gone out. At most once: do not send again; a human checks.
            if self.ledger.fail_send(
                key, error_code=UNKNOWN_OUTCOME, reason="a previous attempt crashed while sending"
            ):
                log.error("Event %s was being sent when a previous attempt stopped; not resending", key)
                return self._dead_letter(
                    message,
                    key,
                    UNKNOWN_OUTCOME,
                    "a previous attempt crashed while sending; not resent",
                    event_id=key,
                    outcome=Outcome.FAILED,
                    failure_code=UNKNOWN_OUTCOME,
                )
            doc = self.ledger.get(key) or doc
            state = doc.get("state")
        if state in FINAL_STATES:
            if state in (State.DEAD_LETTERED, State.FAILED) and not doc.get("dlq_message_id"):
                # Recorded, but the DLQ copy was never confirmed (a crash in between): finish it.
                code = str(doc.get("error_code") or "dead_lettered")
                reason = str(doc.get("reason") or code)
                outcome = Outcome.FAILED if state == State.FAILED else Outcome.DEAD_LETTERED
                return self._dead_letter(
                    message,
                    key,
                    reason.split(":", 1)[0],
                    reason,
                    event_id=key,
                    outcome=outcome,
                    failure_code=code if outcome is Outcome.FAILED else None,
                )
            log.info("Event %s is already %s; deleting the duplicate SQS message", key, state)
            self._delete(message)
            return self._count(Outcome.DUPLICATE)
        # Still pending: another worker is on it, keep this copy for later.
        self._leave(message)
        return self._count(Outcome.LEFT)

    # -- SQS ---------------------------------------------------------------------------------

    def _dead_letter_new(
        self,
        message: dict[str, Any],
        key: str,
        reason: str,
        detail: str,
        *,
        event: FollowupEvent | None = None,
        event_id: str | None = None,
        state: State = State.DEAD_LETTERED,
        error_code: str | None = None,
    ) -> Outcome:
        """Record a pre-send outcome (dead_lettered / failed), then move the message to the DLQ."""
        event_id = event.event_id if event is not None else event_id
        recorded, doc = self.ledger.finish(
            key,
            state,
            sqs_message_id=str(message["MessageId"]),
            reason=f"{reason}: {detail}",
            error_code=error_code,
            event_id=event_id,
            event_type=event.event_type.value if event is not None else None,
            user_id=event.user_id if event is not None else None,
            # An invalid copy must not overwrite a valid copy's pending event.
            from_pending=event is not None,
        )
        if not recorded and doc is not None and event is not None:
            # The event already has another outcome (e.g. sent by an earlier copy).
            return self._resolve_existing(message, doc)
        outcome = Outcome.FAILED if state == State.FAILED else Outcome.DEAD_LETTERED
        return self._dead_letter(
            message,
            key if recorded else None,
            reason,
            f"{reason}: {detail}",
            event_id=event_id,
            outcome=outcome,
            failure_code=error_code,
        )

    def _dead_letter(
        self,
        message: dict[str, Any],
        key: str | None,
        reason: str,
        detail: str,
        *,
        event_id: str | None,
        outcome: Outcome,
        failure_code: str | None = None,
    ) -> Outcome:
        attributes = {
            "reason": {"DataType": "String", "StringValue": detail[:1000]},
            "reason_code": {"DataType": "String", "StringValue": reason[:200]},
            "source_message_id": {"DataType": "String", "StringValue": str(message.get("MessageId"))},
        }
        if event_id:
            attributes["event_id"] = {"DataType": "String", "StringValue": event_id}
        response = self.sqs.send_message(
            QueueUrl=self.settings.dlq_url, MessageBody=message.get("Body") or "(empty)", MessageAttributes=attributes
        )
        if key is not None:
            self.ledger.mark_dead_letter_sent(key, response["MessageId"])
        self._delete(message)
        log.warning("SQS message %s (event %s) dead-lettered: %s", message.get("MessageId"), event_id, reason)
        with self._lock:
            self._summary.dead_letter_reasons[reason] += 1
            if failure_code:
                self._summary.failure_codes[failure_code] += 1
            if event_id or message.get("MessageId"):
                self._summary.problem_event_ids.append(event_id or message_key(str(message["MessageId"])))
        return self._count(outcome)

    def _delete(self, message: dict[str, Any]) -> None:
        """Delete the message from the queue (its outcome is already in the ledger).

        Deletes go out in batches of 10 (``DeleteMessageBatch``): a tenth of the SQS calls. A
        crash before a batch is flushed only means redeliveries, which the ledger absorbs.
        """
        with self._delete_lock:
            self._pending_deletes.append(message)
            if len(self._pending_deletes) < SQS_BATCH:
                return
            batch, self._pending_deletes = self._pending_deletes, []
        self._delete_batch(batch)

    def _flush_deletes(self) -> None:
        with self._delete_lock:
            batch, self._pending_deletes = self._pending_deletes, []
        for start in range(0, len(batch), SQS_BATCH):
            self._delete_batch(batch[start : start + SQS_BATCH])

    def _delete_batch(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
        try:
            response = self.sqs.delete_message_batch(QueueUrl=self.settings.queue_url, Entries=entries)
        except Exception:  # redelivery is harmless: the ledger has the outcome
            log.warning("Could not delete %d SQS message(s); the ledger absorbs their redelivery", len(batch),
                        exc_info=True)  # fmt: skip
            return
        for failure in response.get("Failed") or []:
            log.warning("Could not delete SQS message %s (%s); the ledger absorbs its redelivery",
                        batch[int(failure["Id"])].get("MessageId"), failure.get("Code"))  # fmt: skip

    def _leave(self, message: dict[str, Any], delay: int | None = None) -> None:
        """Leave the message in the queue, visible again after ``delay`` (backoff by receive count)."""
        if delay is None:
            receives = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1) or 1)
            delay = min(MAX_REDELIVERY_DELAY_S, self.settings.redelivery_delay_seconds * 2 ** (receives - 1))
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.settings.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=delay
            )
        except Exception:  # it comes back when the receive's visibility timeout ends
            log.warning("Could not change the visibility of SQS message %s", message.get("MessageId"), exc_info=True)

    def _count(self, outcome: Outcome) -> Outcome:
        with self._lock:
            summary = self._summary
            if outcome is Outcome.SENT:
                summary.sent += 1
            elif outcome is Outcome.SKIPPED:
                summary.skipped += 1
            elif outcome is Outcome.DUPLICATE:
                summary.duplicates += 1
            elif outcome is Outcome.DEAD_LETTERED:
                summary.dead_lettered += 1
            elif outcome is Outcome.FAILED:
                summary.dead_lettered += 1
                summary.failed += 1
            else:
                summary.left_for_redelivery += 1
        return outcome


# --------------------------------------------------------------------------------------------
# Wiring inside an Airflow task


def load_settings() -> ProcessorSettings:
    """Variables read once in the task's main thread (the worker threads never touch Airflow)."""
    from airflow.sdk import Variable

    from leadflow.config import (
        VAR_DLQ_URL,
        VAR_FOLLOWUP_CONCURRENCY,
        VAR_FOLLOWUP_SEND_RATE,
        VAR_QUEUE_URL,
        VAR_WHATSAPP_TEMPLATES,
    )
    from leadflow.followups.dag_settings import (
        DEFAULT_CONCURRENCY,
        DEFAULT_SEND_RATE,
        MAX_SEND_RATE,
        PROCESS_BUDGET_SECONDS,
    )

    rate = float(Variable.get(VAR_FOLLOWUP_SEND_RATE, default=DEFAULT_SEND_RATE))
    return ProcessorSettings(
        queue_url=Variable.get(VAR_QUEUE_URL),
        dlq_url=Variable.get(VAR_DLQ_URL),
        templates=TemplateConfig.parse(Variable.get(VAR_WHATSAPP_TEMPLATES, default=None)),
        concurrency=max(1, int(Variable.get(VAR_FOLLOWUP_CONCURRENCY, default=DEFAULT_CONCURRENCY))),
        send_rate_per_second=min(rate, MAX_SEND_RATE) if rate > 0 else MAX_SEND_RATE,
        budget_seconds=PROCESS_BUDGET_SECONDS,
    )


def build_processor(settings: ProcessorSettings | None = None) -> FollowupProcessor:
    """A processor wired to the Airflow connections (Mongo, AWS, OpenAI, WhatsApp)."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Variable
    from botocore.config import Config

    from leadflow.config import AWS_CONN_ID, VAR_OPENAI_MODEL
    from leadflow.followups.personalise import openai_client
    from leadflow.followups.whatsapp import WhatsAppConfig
    from leadflow.mongo import get_database

    settings = settings or load_settings()
    pool = settings.concurrency + 4
    sqs = SqsHook(aws_conn_id=AWS_CONN_ID, config=Config(max_pool_connections=pool)).conn
    model = Variable.get(VAR_OPENAI_MODEL, default=DEFAULT_OPENAI_MODEL) or DEFAULT_OPENAI_MODEL
    db = get_database()
    from leadflow.followups.openai_usage import UsageMeter  # openai_usage hook

    return FollowupProcessor(
        db=db,
        sqs=sqs,
        personaliser=Personaliser(openai_client(), model, usage=UsageMeter.from_airflow(db)),  # openai_usage hook
        whatsapp=WhatsAppClient(WhatsAppConfig.from_connection(), pool_size=pool),
        settings=settings,
    )
