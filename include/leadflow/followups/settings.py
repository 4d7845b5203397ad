"""The processor's settings, read from Airflow Variables once per task (worker threads never read them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from leadflow.followups.budget import DEFAULT_CONCURRENCY, MIN_SEND_RATE, max_concurrency
from leadflow.followups.dag_settings import (
    DEFAULT_SEND_RATE,
    NUDGE_MAX_SEND_RATE,
    OUTAGE_REQUEUE_DELAY_S,
    PROCESS_BUDGET_SECONDS,
    REMINDER_CONCURRENCY,
    REMINDER_OUTAGE_REQUEUE_DELAY_S,
    REMINDER_SEND_RATE,
    VISIBILITY_TIMEOUT_S,
)
from leadflow.followups.pacing import PAIR_PACING_SECONDS
from leadflow.messaging.templates import TemplateConfig

log = logging.getLogger(__name__)

VAR_UNKNOWN_OUTCOME_GRACE = "leadflow_followup_unknown_outcome_grace_minutes"
DEFAULT_UNKNOWN_OUTCOME_GRACE_MINUTES = 15


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
    # How long an ambiguous send waits for its delivery receipt before it is sent once more.
    unknown_outcome_grace_seconds: float = DEFAULT_UNKNOWN_OUTCOME_GRACE_MINUTES * 60
    # After an account-level error: when the unsent messages come back (fresh copies, see requeue).
    outage_requeue_delay_seconds: int = OUTAGE_REQUEUE_DELAY_S
    # Keep receiving from the queue during the run (see FollowupProcessor.process), with the
    # sensor's visibility timeout; off, the run processes only the batch it was handed.
    keep_receiving: bool = False
    receive_visibility_seconds: int = VISIBILITY_TIMEOUT_S


def capped_concurrency(raw: Any, send_rate: float) -> int:
    """The concurrency Variable, capped so the visibility-timeout budget holds (see budget)."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = DEFAULT_CONCURRENCY
    cap = max_concurrency(send_rate)
    if value > cap:
        log.warning("leadflow_followup_concurrency %d exceeds the visibility-timeout budget at %g msg/s; using %d",
                    value, send_rate, cap)  # fmt: skip
    return max(1, min(value, cap))


def capped_send_rate(raw: Any) -> float:
    """The send-rate Variable within [1, 70] msg/s (Meta's default ceiling of 80 less the reminders'
    share); unset or <= 0 means that ceiling."""
    try:
        rate = float(raw)
    except (TypeError, ValueError):
        rate = DEFAULT_SEND_RATE
    return max(MIN_SEND_RATE, min(rate, NUDGE_MAX_SEND_RATE)) if rate > 0 else NUDGE_MAX_SEND_RATE


def grace_seconds(raw: Any) -> float:
    try:
        minutes = float(raw)
    except (TypeError, ValueError):
        minutes = DEFAULT_UNKNOWN_OUTCOME_GRACE_MINUTES
    return max(0.0, minutes) * 60


def load_settings(*, reminders: bool = False) -> ProcessorSettings:
    """The nudges' consumer's settings, or (``reminders``) those of the reminders' one: its own
    queue pair, its share of the send rate, a shorter come-back after an outage."""
    from airflow.sdk import Variable

    from leadflow.config import (
        VAR_DLQ_URL,
        VAR_FOLLOWUP_CONCURRENCY,
        VAR_FOLLOWUP_SEND_RATE,
        VAR_QUEUE_URL,
        VAR_REMINDERS_DLQ_URL,
        VAR_REMINDERS_QUEUE_URL,
        VAR_WHATSAPP_TEMPLATES,
    )

    common = {
        "templates": TemplateConfig.parse(Variable.get(VAR_WHATSAPP_TEMPLATES, default=None)),
        "budget_seconds": PROCESS_BUDGET_SECONDS,
        "keep_receiving": True,
        "unknown_outcome_grace_seconds": grace_seconds(
            Variable.get(VAR_UNKNOWN_OUTCOME_GRACE, default=DEFAULT_UNKNOWN_OUTCOME_GRACE_MINUTES)
        ),
    }
    if reminders:
        return ProcessorSettings(
            queue_url=Variable.get(VAR_REMINDERS_QUEUE_URL),
            dlq_url=Variable.get(VAR_REMINDERS_DLQ_URL),
            concurrency=REMINDER_CONCURRENCY,
            send_rate_per_second=REMINDER_SEND_RATE,
            outage_requeue_delay_seconds=REMINDER_OUTAGE_REQUEUE_DELAY_S,
            **common,
        )
    send_rate = capped_send_rate(Variable.get(VAR_FOLLOWUP_SEND_RATE, default=DEFAULT_SEND_RATE))
    return ProcessorSettings(
        queue_url=Variable.get(VAR_QUEUE_URL),
        dlq_url=Variable.get(VAR_DLQ_URL),
        concurrency=capped_concurrency(Variable.get(VAR_FOLLOWUP_CONCURRENCY, default=DEFAULT_CONCURRENCY), send_rate),
        send_rate_per_second=send_rate,
        **common,
    )
