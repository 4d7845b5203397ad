"""The visibility-timeout budget of ``whatsapp_followups``, computed from the clients' own settings.

A message received by a run must stay invisible to SQS's other consumers (and to the next run)
until the run has recorded its outcome, so the receive's visibility timeout
(``dag_settings.VISIBILITY_TIMEOUT_S``) must exceed the longest a run can take to get to any of
its messages (:func:`worst_case_run_seconds`):

    processing budget (no new message is *started* after it)                          600 s
  + the worst case of the one message a thread started just before the budget ended
      OpenAI:   timeout x (1 + max_retries) + the client's capped backoff = 20 x 3 + 2 x 8 = 76 s
      WhatsApp: (connect + read timeout) x attempts + backoff              = 20 x 4 + 3 x 8 = 104 s
      pacing:   one wait since the same user's previous send                             6 s
      send-rate limit: every thread queued on the token bucket             N / send rate
      Mongo / SQS round trips                                                          10 s
  + the hand-over from the sensor to the processing task (scheduling)                  60 s

  856 s + N / rate <= 1200 s

The pacing term is one wait, not one per thread, because one user's messages run on one
thread (``FollowupProcessor._group``): spread over N threads they would queue on that user's
pacing lock, 6 s each, and the term would be 6 s x N (58 threads at most). The bucket term
allows thousands of threads at any permitted send rate, so the cap on the
``leadflow_followup_concurrency`` Variable is :data:`MAX_THREADS`, a connection-pool limit,
lowered by the budget only at very low send rates. A change to any term moves the cap with it.
(Not in ``dag_settings``: the DAG file imports that at parse time, and these terms import the
HTTP clients.)
"""

from __future__ import annotations

from leadflow.followups.dag_settings import MAX_SEND_RATE, PROCESS_BUDGET_SECONDS, VISIBILITY_TIMEOUT_S
from leadflow.followups.pacing import PAIR_PACING_SECONDS
from leadflow.followups.personalise import DEFAULT_TIMEOUT_S as OPENAI_TIMEOUT_S
from leadflow.messaging.whatsapp import CONNECT_TIMEOUT_S, RetryPolicy
from leadflow.messaging.whatsapp import DEFAULT_TIMEOUT_S as WHATSAPP_READ_TIMEOUT_S

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


def worst_case_run_seconds(
    concurrency: int, send_rate: float = MAX_SEND_RATE, pacing_seconds: float = PAIR_PACING_SECONDS
) -> float:
    """The longest a run can take to reach its last message, with ``concurrency`` threads."""
    return (
        PROCESS_BUDGET_SECONDS
        + openai_worst_seconds()
        + whatsapp_worst_seconds()
        + pacing_seconds
        + (concurrency / send_rate if send_rate > 0 else 0.0)  # rate 0: no limit (tests, bench)
        + ROUND_TRIPS_S
        + HANDOVER_S
    )


def one_message_worst_seconds(pacing_seconds: float = PAIR_PACING_SECONDS) -> float:
    """The longest one started message can take, its user's pacing wait included."""
    return openai_worst_seconds() + whatsapp_worst_seconds() + pacing_seconds + ROUND_TRIPS_S


def receive_window_seconds(budget_seconds: float, pacing_seconds: float = PAIR_PACING_SECONDS) -> float:
    """How long into its run ``process_messages`` keeps receiving from SQS: the budget less one
    message's worst case, so a message received at the window's end (queued behind its user's
    message in progress) still starts within the budget instead of going back to the queue with
    one more receive counted towards the DLQ. Its own visibility timeout starts at its receive,
    after the run started, so it holds with more room than the sensor's batch (no hand-over)."""
    return max(0.0, budget_seconds - one_message_worst_seconds(pacing_seconds))


def max_concurrency(send_rate: float, visibility_timeout_s: float = VISIBILITY_TIMEOUT_S) -> int:
    """The most threads whose worst case still fits the visibility timeout at ``send_rate``."""
    fixed = worst_case_run_seconds(0, send_rate)
    return max(1, min(MAX_THREADS, int((visibility_timeout_s - fixed) * send_rate)))


# One Mongo connection per thread at most, within pymongo's default pool of 100 (MongoHook does
# not raise it), so no thread waits for a connection; the HTTP pools are sized to the threads.
MAX_THREADS = 96
# About send rate x per-message latency: 80 msg/s x 0.7 s (OpenAI ~0.5 s, WhatsApp ~0.1 s, Mongo
# and SQS) keeps ~56 messages in flight; with slower model answers more threads are needed.
DEFAULT_CONCURRENCY = MAX_THREADS
MIN_SEND_RATE = 1.0  # below this the token bucket alone could outwait the visibility timeout

assert worst_case_run_seconds(max_concurrency(MIN_SEND_RATE), MIN_SEND_RATE) <= VISIBILITY_TIMEOUT_S
