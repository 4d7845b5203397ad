"""The send of one follow-up and what each WhatsApp answer does to its ledger entry and SQS message.

Mixed into :class:`.processor.FollowupProcessor`, which decides whether and what to send (this
module starts after that decision: the pacing slot, ``pending -> sending``, the HTTP call, then
``sent``, or the error's handling). The processor provides the attributes annotated below and the
outcome steps the error handling ends in (``_skip``, ``_settle``, ``_dead_letter_new``,
``_dead_letter``, ``_stop_batch``, ``_hand_back``, ``_wait_as_copy``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.database import Database

from leadflow.config import USERS
from leadflow.followups.contract import FollowupEvent
from leadflow.followups.deadlines import deadline_of, is_late, late_seconds, record_lateness
from leadflow.followups.outcomes import BatchSummary, Outcome
from leadflow.followups.pacing import TokenBucket, UserPacer
from leadflow.followups.personalise import Personalised
from leadflow.followups.settings import ProcessorSettings
from leadflow.followups.snapshot import BatchSnapshot
from leadflow.marketing import USER_FIELDS as MARKETING_FIELDS
from leadflow.marketing import hold_for_code, record_refusal
from leadflow.messaging.ledger import UNKNOWN_OUTCOME, Ledger, NewText, State
from leadflow.messaging.queue_actions import QueueActions
from leadflow.messaging.whatsapp import (
    WINDOW_CLOSED,
    SendMode,
    TemplateMediaMissing,
    WhatsAppClient,
    WhatsAppError,
    media_payload,
    template_payload,
    text_payload,
)
from leadflow.phones import mask

log = logging.getLogger(__name__)

MAX_VISIBILITY_S = 43_200  # SQS's limit on ChangeMessageVisibility (12 h)
GRACE_MARGIN_S = 30  # a receipt sent at the end of the grace period has time to land


def new_text(message: dict[str, Any], event: FollowupEvent, text: Personalised) -> NewText:
    return NewText(
        event_type=event.event_type.value,
        user_id=event.user_id,
        text=text.text,
        text_source=text.source,
        fallback_reason=text.fallback_reason,
        sqs_message_id=str(message["MessageId"]),
        openai_usage=text.usage,  # openai_usage hook
    )


class SendStep:
    db: Database
    whatsapp: WhatsAppClient
    settings: ProcessorSettings
    ledger: Ledger
    snapshot: BatchSnapshot
    queue: QueueActions
    rate: TokenBucket
    pacer: UserPacer
    now: Callable[[], datetime]
    _summary: BatchSummary
    _abort: threading.Event
    _deadline: float

    def _send(
        self,
        message: dict[str, Any],
        event: FollowupEvent,
        phone: str,
        text: str,
        *,
        unclaimed: Personalised | None = None,
    ) -> Outcome:
        """Send ``text`` once the event is ``sending``. ``unclaimed``: the event has nothing in the
        ledger yet and this is its new text, claimed together with ``pending -> sending`` (one
        write, not two); a step that ends before the send claims it alone, so the text is kept."""
        key = event.event_id
        with self.pacer.slot(event.user_id, lambda: self.snapshot.last_sent(event.user_id)):
            # Checked again after the pacing wait: a thread queued behind the same user must not
            # start a send after the batch was stopped or its budget ran out.
            if self._abort.is_set() or time.monotonic() > self._deadline:
                self._claim_alone(message, event, unclaimed)
                self._hand_back(message)
                return self._summary.count(Outcome.LEFT)
            window_open = self.snapshot.window_open(event.user_object_id, self.now())
            try:
                payload, mode = self._payload(event, phone, text, window_open)
            except TemplateMediaMissing as problem:
                # Meta would refuse it (132012). A configuration problem of this message only
                # (events with media still go): failed with its reason, redriven once fixed.
                self._claim_alone(message, event, unclaimed)
                return self._dead_letter_new(
                    message, key, "template_needs_media", str(problem), event=event, state=State.FAILED
                )
            if payload is None:
                # A configuration problem, not a bad message: stop the batch, fail nothing.
                self._claim_alone(message, event, unclaimed)
                self._stop_batch("no_template", f"no WhatsApp template configured for {event.event_type}")
                self._hand_back(message)
                return self._summary.count(Outcome.LEFT)
            deadline = deadline_of(event)
            media = {"type": event.media.type, "url": event.media.url} if event.media is not None else None
            if unclaimed is not None:
                claimed = self._claim_and_send(message, event, unclaimed, media, deadline)
                if isinstance(claimed, Outcome):
                    return claimed
                if claimed != text:  # a concurrent copy's text was stored first: that one goes
                    text = claimed
                    payload, mode = self._payload(event, phone, text, window_open)
                    assert payload is not None  # the same template as above
            elif not self.ledger.mark_sending(key, media=media, deadline_at=deadline):
                # Another copy of this event got there first (or it is no longer pending).
                return self._settle(message, self.ledger.get(key))
            try:
                # The rate limiter runs before every attempt, the client's retries after 130429 too.
                wamid = self.whatsapp.send(payload, before_attempt=self.rate.acquire)
            except WhatsAppError as error:
                if error.code != WINDOW_CLOSED or mode == "template":
                    return self._after_send_error(message, event, phone, error)
                sent = self._template_instead(message, event, phone, text)
                if isinstance(sent, Outcome):
                    return sent
                wamid, mode = sent
            self.ledger.mark_sent(key, wamid=wamid, send_mode=mode)
            if deadline is not None:
                self._record_lateness(key, deadline)
        log.info("Event %s sent to %s as %s (wamid %s)", key, mask(phone), mode, wamid)
        self.queue.delete(message)
        self._summary.record_sent_as(mode)
        return self._summary.count(Outcome.SENT)

    def _claim(self, message: dict[str, Any], event: FollowupEvent, text: Personalised) -> dict[str, Any]:
        """Store the event's new text (``pending``), or get the event as it already is."""
        doc = self.ledger.claim(event.event_id, new_text(message, event, text))
        if doc.get("text") == text.text:  # ours, not a concurrent copy's
            self._summary.record_text(text.source, text.fallback_reason)
        return doc

    def _claim_alone(self, message: dict[str, Any], event: FollowupEvent, unclaimed: Personalised | None) -> None:
        if unclaimed is not None:
            self._claim(message, event, unclaimed)

    def _claim_and_send(
        self,
        message: dict[str, Any],
        event: FollowupEvent,
        text: Personalised,
        media: dict[str, str] | None,
        deadline: datetime | None,
    ) -> str | Outcome:
        """The text to send once the new event is ``sending``, or the outcome if it cannot be."""
        key = event.event_id
        doc = self.ledger.claim_and_send(key, new_text(message, event, text), media=media, deadline_at=deadline)
        if doc is not None:
            if doc.get("text") == text.text:
                self._summary.record_text(text.source, text.fallback_reason)
            return str(doc["text"])
        # Recorded meanwhile by another copy (or a receipt): the two steps, as for a known event.
        doc = self._claim(message, event, text)
        if doc.get("state") != State.PENDING or not self.ledger.mark_sending(key, media=media, deadline_at=deadline):
            return self._settle(message, self.ledger.get(key))
        return str(doc["text"])

    def _template_instead(
        self, message: dict[str, Any], event: FollowupEvent, phone: str, text: str
    ) -> tuple[str, SendMode] | Outcome:
        """After a synchronous 131047 (the 24-hour window had closed; nothing was sent): the
        approved template, once, exactly as an asynchronous 131047 gets it (statuses/resend)."""
        key = event.event_id
        log.warning("Event %s to %s: 24-hour window closed (131047); sending the template instead", key, mask(phone))
        try:
            payload, mode = self._payload(event, phone, text, window_open=False)
        except TemplateMediaMissing as problem:
            self.ledger.release(key, error_code=str(WINDOW_CLOSED))
            return self._dead_letter_new(
                message, key, "template_needs_media", str(problem), event=event, state=State.FAILED
            )
        if payload is None:
            self.ledger.release(key, error_code=str(WINDOW_CLOSED))
            self._stop_batch("no_template", f"no WhatsApp template configured for {event.event_type}")
            self._hand_back(message)
            return self._summary.count(Outcome.LEFT)
        try:
            return self.whatsapp.send(payload, before_attempt=self.rate.acquire), mode
        except WhatsAppError as error:
            return self._after_send_error(message, event, phone, error)

    def _after_send_error(
        self, message: dict[str, Any], event: FollowupEvent, phone: str, error: WhatsAppError
    ) -> Outcome:
        key, code = event.event_id, error.code_str
        hold = hold_for_code(error.code)
        if hold is not None:
            # Meta's marketing limit (131049) or the buyer's marketing opt-out (131050): nothing
            # was sent and retrying cannot help. Kept on the user, so neither the planner nor a
            # later send tries marketing again (leadflow.marketing); the event is skipped.
            record_refusal(self.db[USERS], event.user_id, error.code, self.now())
            user = self.snapshot.user(event.user_object_id)
            if user is not None:  # later events of this user in this batch see it too
                user.update(self.db[USERS].find_one({"_id": user["_id"]}, projection=MARKETING_FIELDS) or {})
            self.ledger.release(key, error_code=code)
            return self._skip(message, event, hold, error_code=code)
        if error.account_level:
            self.ledger.release(key, error_code=code)
            self._stop_batch(code, f"WhatsApp account-level error {code} (HTTP {error.status})")
            self._hand_back(message)
            return self._summary.count(Outcome.LEFT)
        if error.ambiguous:
            # The request may have reached WhatsApp: never retried blind. A receipt marks it
            # sent; without one, the delivery after the grace period sends it once more.
            self.ledger.mark_unknown(key, error_code=code)
            self._summary.record_unknown_outcome()
            log.warning("Event %s to %s: outcome unknown (%s); waiting for a receipt", key, mask(phone), code)
            self._wait_as_copy(
                message, self._grace_delay(self.settings.unknown_outcome_grace_seconds), because=UNKNOWN_OUTCOME
            )
            return self._summary.count(Outcome.LEFT)
        if error.transient:
            self.ledger.release(key, error_code=code)
            log.warning("Event %s to %s: rejected for now (%s); left for redelivery", key, mask(phone), code)
            self.queue.leave(message)
            return self._summary.count(Outcome.LEFT)
        reason = f"WhatsApp error {code} (HTTP {error.status})"
        self.ledger.fail_send(key, error_code=code, reason=reason)
        log.error("Event %s to %s: permanent error %s; dead-lettering", key, mask(phone), code)
        return self._dead_letter(
            message, key, f"send_failed_{code}", reason, event_id=key, outcome=Outcome.FAILED, failure_code=code
        )

    def _record_lateness(self, key: str, deadline: datetime) -> None:
        late = late_seconds(deadline, self.now())
        if late > 0:
            record_lateness(self.ledger.collection, key, late)
        if is_late(late):
            log.warning("Reminder %s sent %.0f s after its deadline", key, late)
        self._summary.record_reminder_sent(key, late, is_late(late))

    @staticmethod
    def _grace_delay(grace_seconds: float) -> int:
        return int(min(MAX_VISIBILITY_S, max(0.0, grace_seconds) + GRACE_MARGIN_S))

    def _payload(
        self, event: FollowupEvent, phone: str, text: str, window_open: bool
    ) -> tuple[dict[str, Any] | None, SendMode]:
        media, callback = event.media, event.event_id
        if window_open:
            if media is not None:
                caption = f"{text} {media.caption}" if media.caption else text
                return media_payload(phone, media.type, media.url, caption, callback_data=callback), "media"
            return text_payload(phone, text, callback_data=callback), "text"
        template = self.settings.templates.templates.get(event.event_type.value)
        if template is None:
            return None, "template"
        media_ref = (media.type, media.url) if media is not None else None
        return template_payload(phone, template, text, media_ref, callback_data=callback), "template"
