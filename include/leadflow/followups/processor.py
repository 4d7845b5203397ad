"""Process one batch of follow-up messages received from SQS: the per-message flow.

Concurrency model: one Airflow task processes the whole batch (up to a few hundred messages)
with a bounded :class:`~concurrent.futures.ThreadPoolExecutor`. The work per message is almost
all waiting on the network (OpenAI ~0.5 s, WhatsApp ~0.1 s, Mongo, SQS), which threads overlap
well; one task instance per message would instead pay Airflow's scheduling and process start-up
(seconds) for every message and could never reach WhatsApp's 80 msg/s. Three limits keep the
threads polite: ``concurrency`` threads at most (capped by the visibility-timeout budget, see
:mod:`.dag_settings`), and the rate limits of :mod:`.pacing`.

The seams: :mod:`.snapshot` reads what the batch needs up front, :mod:`.queue_actions` deletes,
dead-letters or leaves each SQS message, :mod:`.outcomes` counts what happened, :mod:`.settings`
holds the knobs, :mod:`.lanes` decides which thread runs which message and :mod:`.sending` sends
one message and handles WhatsApp's answer. This module is the decision for one message.

Every message ends in exactly one outcome (see :mod:`.outcomes`). The SQS message is deleted
(or moved to the DLQ) only after the ledger records its outcome; see
:mod:`leadflow.messaging.ledger` for the ordering that gives at most one send per event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from leadflow.config import DEFAULT_OPENAI_MODEL, DELIVERIES
from leadflow.followups.budget import receive_window_seconds
from leadflow.followups.contract import FollowupEvent, ValidationFailure
from leadflow.followups.deadlines import deadline_of
from leadflow.followups.lanes import BuyerLanes, Grouped, Received, events_of, group_by_buyer
from leadflow.followups.outcomes import BatchSummary, Outcome
from leadflow.followups.pacing import TokenBucket, UserPacer
from leadflow.followups.personalise import Personaliser, prompt_data
from leadflow.followups.requeue import requeue_copy
from leadflow.followups.send_checks import EXPIRED, opt_in, send_time_problem
from leadflow.followups.sending import SendStep
from leadflow.followups.settings import ProcessorSettings, load_settings
from leadflow.followups.snapshot import BatchSnapshot
from leadflow.marketing import MARKETING, marketing_hold
from leadflow.messaging.evidence import has_evidence
from leadflow.messaging.ledger import (
    REOPENABLE_STATES,
    UNKNOWN_OUTCOME,
    Ledger,
    State,
    aware,
    message_key,
)
from leadflow.messaging.queue_actions import SQS_BATCH, QueueActions
from leadflow.messaging.whatsapp import WhatsAppClient
from leadflow.phones import mask, to_e164

log = logging.getLogger(__name__)

RECEIVES_PER_READ = 5


class FollowupProcessor(SendStep):
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
        self.snapshot = BatchSnapshot(db, self.ledger)
        self.queue = QueueActions(
            sqs,
            queue_url=settings.queue_url,
            dlq_url=settings.dlq_url,
            redelivery_delay_seconds=settings.redelivery_delay_seconds,
        )
        self.now = now
        self.rate = TokenBucket(settings.send_rate_per_second)
        self.pacer = UserPacer(settings.pacing_seconds)
        self._summary = BatchSummary()
        self._abort = threading.Event()
        self._deadline = float("inf")
        # Per run: the events this run has already handled a copy of.
        self._handled: set[str] = set()

    # -- batch -------------------------------------------------------------------------------

    def process(self, messages: list[dict[str, Any]]) -> BatchSummary:
        """Process ``messages`` (the sensor's batch) and, with ``settings.keep_receiving``, every
        message this run can still receive within its budget (:func:`.budget.receive_window_seconds`):
        the thread pool is fed while the slowest buyer's paced tail runs, instead of idling until
        the next DAG run. Receiving stops when the queue is empty, the window ends or the batch
        was stopped; the sensor of the next run then waits for new messages."""
        started = time.monotonic()
        self._summary = BatchSummary(received=len(messages))
        self._abort.clear()
        self._deadline = started + self.settings.budget_seconds
        receive_until = started + receive_window_seconds(self.settings.budget_seconds, self.settings.pacing_seconds)
        keep_receiving = self.settings.keep_receiving and time.monotonic() < receive_until
        self.ledger.ensure_indexes()
        self._handled = set()
        users = group_by_buyer(messages)
        self.snapshot.load(events_of(users), self.now())
        workers = self.settings.concurrency if keep_receiving else min(self.settings.concurrency, len(users))
        # At most two messages per thread waiting or running, so a received message is not left
        # idling on its visibility clock; at least one, or a run with few threads would wait for
        # room until its receive window closed, with every lane idle.
        backlog = max(1, 2 * self.settings.concurrency - SQS_BATCH // 2)
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="followup") as pool:
                lanes = BuyerLanes(pool, self._run_group)
                lanes.dispatch(users)
                while keep_receiving:
                    lanes.wait_for_room(backlog, receive_until, self._abort)
                    if self._abort.is_set() or time.monotonic() >= receive_until:
                        break
                    more = self._receive_more(lanes.unfinished)
                    if not more:
                        break
                    lanes.dispatch(more)
                lanes.join()
        finally:
            self.queue.flush()
            if self.personaliser.usage is not None:  # openai_usage hook
                self.personaliser.usage.flush()
        self._summary.elapsed_seconds = time.monotonic() - started
        log.info("Batch done: %s", self._summary.as_dict())
        return self._summary

    def _receive_more(self, unfinished: int) -> Grouped | None:
        """The next receive, grouped and with its snapshot read; None ends the receiving."""
        received: list[dict[str, Any]] = []
        room = max(1, 2 * self.settings.concurrency - unfinished)
        # Several receives share one snapshot read (four Mongo queries): up to RECEIVES_PER_READ
        # calls while the queue answers full ones and the threads have room.
        for _ in range(min(RECEIVES_PER_READ, -(-room // SQS_BATCH))):
            try:
                answer = self.queue.receive(self.settings.receive_visibility_seconds)
            except Exception:  # the batch in hand is unaffected: finish it, the next run receives
                log.warning("Could not receive more SQS messages; the run finishes those it has", exc_info=True)
                break
            received += answer
            if len(answer) < SQS_BATCH:
                break
        if not received:
            return None
        self._summary.record_received(len(received))
        more = group_by_buyer(received)
        try:
            self.snapshot.add(events_of(more), self.now())
        except Exception:
            # Infrastructure trouble (Mongo): as for a message's own error, back to the queue and
            # the task fails at the end so the failure alert fires.
            log.exception("Could not read what %d received message(s) need; leaving them for redelivery", len(received))
            self._summary.record_error()
            for message in received:
                self.queue.leave(message, delay=0)
                self._summary.count(Outcome.LEFT)
            return None
        return more

    def _run_group(self, group: list[Received]) -> None:
        first = group[0][1]
        if isinstance(first, FollowupEvent):
            if first.event_id in self._handled:  # a copy from a later receive: its snapshot predates ours
                self.snapshot.refresh(first.event_id)
            self._handled.add(first.event_id)
        first_outcome = self._run_one(*group[0])
        for message, parsed in group[1:]:
            if first_outcome is Outcome.LEFT:
                # The first copy stays in the queue for redelivery; this one is surplus.
                self.queue.delete(message)
                self._summary.count(Outcome.DUPLICATE)
            else:
                if isinstance(parsed, FollowupEvent):  # the snapshot predates the first copy
                    self.snapshot.refresh(parsed.event_id)
                self._run_one(message, parsed)

    def _run_one(self, message: dict[str, Any], parsed: Any) -> Outcome:
        if self._abort.is_set() or time.monotonic() > self._deadline:
            self._hand_back(message)
            return self._summary.count(Outcome.LEFT)
        try:
            return self._handle(message, parsed)
        except Exception:
            # Infrastructure trouble (Mongo, SQS): leave the message for redelivery, fail the task
            # at the end of the batch so the failure alert fires.
            log.exception("Unexpected error on SQS message %s; leaving it for redelivery", message.get("MessageId"))
            self._summary.record_error()
            return self._summary.count(Outcome.LEFT)

    # -- one message -------------------------------------------------------------------------

    def _handle(self, message: dict[str, Any], parsed: Any) -> Outcome:
        if isinstance(parsed, ValidationFailure):
            # Recorded under the SQS message id, never under the event id it may carry: a
            # malformed copy must never block a valid copy of the same event.
            key = message_key(str(message["MessageId"]))
            return self._dead_letter_new(message, key, parsed.reason, parsed.detail, event_id=parsed.event_id)
        event: FollowupEvent = parsed
        key = event.event_id
        doc = self.snapshot.doc(key)
        if doc is not None and doc.get("state") != State.PENDING:
            arrived = self._on_arrival(message, doc)
            if isinstance(arrived, Outcome):
                return arrived
            doc = arrived

        user = self.snapshot.user(event.user_object_id)
        if user is None:
            return self._dead_letter_new(message, key, "unknown_user", "no such user", event=event)
        stale = send_time_problem(event, user, self.now())
        if stale is not None:
            return self._skip(message, event, stale)
        consent = opt_in(user.get("whatsapp_opt_in"))
        if consent is not True:
            return self._skip(message, event, "opted_out" if consent is False else "opt_in_unreadable")
        if self.settings.templates.category(event.event_type.value) == MARKETING:
            hold = marketing_hold(user, self.now())
            if hold is not None:  # the buyer's marketing opt-out, or Meta's 24 h marketing limit
                return self._skip(message, event, hold)
        phone = to_e164(user.get("mobile"))
        if phone is None:
            return self._dead_letter_new(
                message, key, "invalid_phone", f"mobile {mask(user.get('mobile'))} is not a valid number", event=event
            )

        # The text: reuse the one stored by an earlier attempt, else generate and claim.
        if doc is None or not doc.get("text"):
            result = self.personaliser.personalise(prompt_data(event.event_type, user, event.scheduled_at))
            if doc is None:  # nothing recorded: claimed together with the send, in one write
                return self._send(message, event, phone, result.text, unclaimed=result)
            doc = self._claim(message, event, result)
            if doc.get("state") != State.PENDING:
                return self._settle(message, doc)
        return self._send(message, event, phone, str(doc["text"]))

    def _stop_batch(self, code: str, detail: str) -> None:
        """An account-level problem: no further send in this batch, fail the task once (see tasks)."""
        if self._summary.record_account_error(code, detail):
            log.error("%s; stopping the batch, every unsent message stays in the queue", detail)
        self._abort.set()

    def _hand_back(self, message: dict[str, Any]) -> None:
        """A message this run will not get to: straight back to the queue, or, after an
        account-level error, as a fresh copy later (see :mod:`.requeue`)."""
        code = self._summary.account_error_code
        if code is None:
            self.queue.leave(message, delay=0)
            return
        # Every message would fail the same way until a human acts; handing them straight back
        # would make the next run fail (and alert) at once again.
        if self._wait_as_copy(message, self.settings.outage_requeue_delay_seconds, because=code):
            self._summary.record_requeued()

    def _wait_as_copy(self, message: dict[str, Any], delay: int, *, because: str) -> bool:
        """Back on the queue after ``delay`` as a fresh copy, so a wait the run chose does not
        spend the message's receives (see :mod:`.requeue`); if SQS refuses the copy, the original
        waits instead (a fallback, counted in the summary) and False."""
        if requeue_copy(self.sqs, self.settings.queue_url, message, delay_seconds=delay, because=because):
            self.queue.delete(message)
            return True
        self._summary.record_requeue_fallback()
        self.queue.leave(message, delay=delay)
        return False

    def _skip(
        self, message: dict[str, Any], event: FollowupEvent, reason: str, *, error_code: str | None = None
    ) -> Outcome:
        key = event.event_id
        deadline = deadline_of(event)
        recorded, doc = self.ledger.finish(
            key,
            State.SKIPPED,
            sqs_message_id=message["MessageId"],
            reason=reason,
            error_code=error_code,
            event_id=key,
            event_type=event.event_type.value,
            user_id=event.user_id,
            deadline_at=deadline,
        )
        if not recorded:
            return self._settle(message, doc)
        if reason == EXPIRED and deadline is not None:
            # Never a silent skip: counted in the run summary, and the run alerts (tasks).
            log.warning("Reminder %s expired before it could be sent", key)
            self._summary.record_reminder_expired(key)
        log.info("Event %s skipped (%s)", key, reason)
        self.queue.delete(message)
        self._summary.record_skip(reason)
        return self._summary.count(Outcome.SKIPPED)

    # -- ledger states found on arrival ------------------------------------------------------

    def _on_arrival(self, message: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any] | Outcome:
        """What a new copy of an already known event does: the pending document to go on with, or an outcome.

        ``sent`` is final, and so is any event a receipt proved delivered, whatever its state says;
        ``unknown_outcome`` waits out its grace period, then allows one resend; every other state
        is re-evaluated from scratch (redrive, or the cause was fixed).
        """
        key = doc["_id"]
        for _ in range(3):  # each pass follows one state change made by someone else
            state = doc.get("state")
            if state != State.SENT and has_evidence(doc):
                self.ledger.settle_by_evidence(key)
                state = State.SENT
            if state == State.PENDING:
                return doc
            if state == State.SENT:
                log.info("Event %s is already sent; deleting the duplicate SQS message", key)
                self.queue.delete(message)
                return self._summary.count(Outcome.DUPLICATE)
            if state == State.SENDING:
                # A previous attempt stopped between claiming the send and recording its result:
                # the message may have gone out. Same as an ambiguous answer, from when it started.
                self.ledger.mark_unknown(
                    key, error_code="interrupted_while_sending", since=aware(doc.get("sending_at"))
                )
                log.warning("Event %s was being sent when a previous attempt stopped; outcome unknown", key)
            elif state == State.UNKNOWN_OUTCOME:
                since = aware(doc.get("unknown_outcome_at")) or self.now()
                grace = timedelta(seconds=self.settings.unknown_outcome_grace_seconds)
                wait = (since + grace - self.now()).total_seconds()
                if wait > 0:
                    log.info("Event %s: outcome unknown, no receipt yet; checking again in %.0f s", key, wait)
                    self._wait_as_copy(message, self._grace_delay(wait), because=UNKNOWN_OUTCOME)
                    return self._summary.count(Outcome.LEFT)
                reclaimed = self.ledger.reclaim_unknown(key, not_after=self.now() - grace)
                if reclaimed is not None:
                    log.warning("Event %s: no receipt within the grace period; sending it once more", key)
                    self._summary.record_resend()
                    return reclaimed
                current = self.ledger.get(key) or doc
                if current.get("state") == State.UNKNOWN_OUTCOME:  # the one resend was ambiguous too
                    reason = "outcome still unknown after a resend; a human checks the WhatsApp side"
                    self.ledger.fail_send(
                        key, error_code=UNKNOWN_OUTCOME, reason=reason, from_state=State.UNKNOWN_OUTCOME
                    )
                    return self._dead_letter(
                        message, key, UNKNOWN_OUTCOME, reason, event_id=key, outcome=Outcome.FAILED,
                        failure_code=UNKNOWN_OUTCOME,
                    )  # fmt: skip
            elif state in REOPENABLE_STATES:
                reopened = self.ledger.reopen(key, sqs_message_id=str(message["MessageId"]))
                if reopened is not None:
                    log.info("Event %s was %s; evaluating it again", key, state)
                    self._summary.record_reopened(str(state))
                    return reopened
            doc = self.ledger.get(key) or doc
        self.queue.leave(message)
        return self._summary.count(Outcome.LEFT)

    def _settle(self, message: dict[str, Any], doc: dict[str, Any] | None) -> Outcome:
        """Another copy of the event (or a receipt) changed it under us: a duplicate if sent or proved
        delivered, else try again later."""
        if doc is not None and doc.get("state") != State.SENT and has_evidence(doc):
            self.ledger.settle_by_evidence(str(doc["_id"]))
            doc = {**doc, "state": State.SENT}
        if doc is not None and doc.get("state") == State.SENT:
            self.queue.delete(message)
            return self._summary.count(Outcome.DUPLICATE)
        self.queue.leave(message)
        return self._summary.count(Outcome.LEFT)

    # -- dead letters ------------------------------------------------------------------------

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
        )
        if not recorded and event is not None:
            return self._settle(message, doc)
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
        dlq_message_id = self.queue.dead_letter(message, reason, detail, event_id=event_id)
        if key is not None:
            self.ledger.mark_dead_letter_sent(key, dlq_message_id)
        self.queue.delete(message)
        self._summary.record_dead_letter(reason, event_id or message_key(str(message.get("MessageId"))), failure_code)
        return self._summary.count(outcome)


# --------------------------------------------------------------------------------------------
# Wiring inside an Airflow task


def build_processor(settings: ProcessorSettings | None = None) -> FollowupProcessor:
    """A processor wired to the Airflow connections (Mongo, AWS, OpenAI, WhatsApp)."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook
    from airflow.sdk import Variable
    from botocore.config import Config

    from leadflow.config import AWS_CONN_ID, VAR_OPENAI_MODEL
    from leadflow.followups.personalise import openai_client
    from leadflow.messaging.whatsapp import WhatsAppConfig
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
