"""The visibility-timeout budget of ``whatsapp_followups``, computed from the clients' own settings.

A message received by a run must stay invisible to SQS's other consumers (and to the next run)
until the run has recorded its outcome, so the receive's visibility timeout
(``dag_settings.VISIBILITY_TIMEOUT_S``) must exceed the longest a run can take to get to any of
its messages (:func:`worst_case_run_seconds`):

    processing budget (no new message is *started* after it)                          600 s
  + the worst case of one message started just before the budget ends
      OpenAI:   timeout x (1 + max_retries) + the client's capped backoff = 20 x 3 + 2 x 8 = 76 s
      WhatsApp: (connect + read timeout) x attempts + backoff              = 20 x 4 + 3 x 8 = 104 s
      pacing:   the same user's earlier messages (6 s each) x a full thread pool       6 s x N
      Mongo / SQS round trips                                                          10 s
  + the hand-over from the sensor to the processing task (scheduling)                  60 s

  850 s + 6 s x N <= 1200 s  ->  N <= MAX_CONCURRENCY (58)

so the ``leadflow_followup_concurrency`` Variable is capped at :data:`MAX_CONCURRENCY`, and a
change to any of the terms moves the cap with it. (Not in ``dag_settings``: the DAG file imports
that at parse time, and these terms import the HTTP clients.)
"""

from __future__ import annotations

from leadflow.followups.dag_settings import PROCESS_BUDGET_SECONDS, VISIBILITY_TIMEOUT_S
from leadflow.followups.pacing import PAIR_PACING_SECONDS
from leadflow.followups.personalise import DEFAULT_TIMEOUT_S as OPENAI_TIMEOUT_S
from leadflow.followups.whatsapp import CONNECT_TIMEOUT_S, RetryPolicy
from leadflow.followups.whatsapp import DEFAULT_TIMEOUT_S as WHATSAPP_READ_TIMEOUT_S

OPENAI_MAX_RETRIES = 2  # the openai_default connection's openai_client_kwargs
OPENAI_MAX_BACKOFF_S = 8.0  # the openai client's MAX_RETRY_DELAY
ROUND_TRIPS_S = 10.0
HANDOVER_S = 60.0


def openai_worst_seconds() -> float:
    return OPENAI_TIMEOUT_S * (1 + OPENAI_MAX_RETRIES) + OPENAI_MAX_BACKOFF_S * OPENAI_MAX_RETRIES


def whatsapp_worst_seconds(policy: RetryPolicy | None = None) -> float:
    policy = policy or RetryPolicy()
    backoff = max(policy.max_wait, policy.pair_wait) * (policy.attempts - 1)
    return (CONNECT_TIMEOUT_S + WHATSAPP_READ_TIMEOUT_S) * policy.attempts + backoff


def worst_case_run_seconds(concurrency: int, pacing_seconds: float = PAIR_PACING_SECONDS) -> float:
    """The longest a run can take to reach its last message, with ``concurrency`` threads."""
    return (
        PROCESS_BUDGET_SECONDS
        + openai_worst_seconds()
        + whatsapp_worst_seconds()
        + pacing_seconds * concurrency
        + ROUND_TRIPS_S
        + HANDOVER_S
    )


def max_concurrency(visibility_timeout_s: float = VISIBILITY_TIMEOUT_S) -> int:
    fixed = worst_case_run_seconds(0)
    return max(1, int((visibility_timeout_s - fixed) // PAIR_PACING_SECONDS))


MAX_CONCURRENCY = max_concurrency()
# ~ send rate x per-message latency (60-80 msg/s x ~0.7 s) would be 64; the budget allows less.
DEFAULT_CONCURRENCY = min(64, MAX_CONCURRENCY)

assert worst_case_run_seconds(MAX_CONCURRENCY) <= VISIBILITY_TIMEOUT_S
