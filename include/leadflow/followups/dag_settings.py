"""Tunables of the ``whatsapp_followups`` DAG, and the arithmetic that ties them together.

The one invariant that matters: a message received by a run must stay invisible to SQS's other
consumers (and to the next run) until the run has recorded its outcome. So the receive's
visibility timeout must exceed the longest a run can take to get to any of its messages
(:func:`worst_case_run_seconds`, computed from the clients' own timeouts and retry policies):

    processing budget (no new message is *started* after it)                          600 s
  + the worst case of one message started just before the budget ends
      OpenAI:   timeout x (1 + max_retries) + the client's capped backoff = 20 x 3 + 2 x 8 = 76 s
      WhatsApp: (connect + read timeout) x attempts + backoff              = 20 x 4 + 3 x 8 = 104 s
      pacing:   the same user's earlier messages (6 s each) x a full thread pool       6 s x N
      Mongo / SQS round trips                                                          10 s
  + the hand-over from the sensor to the processing task (scheduling)                  60 s

  850 s + 6 s x N <= VISIBILITY_TIMEOUT_S (1200 s)  ->  N <= MAX_CONCURRENCY (58)

so the ``leadflow_followup_concurrency`` Variable is capped at :data:`MAX_CONCURRENCY` (a
larger value is logged and ignored), and a change to any of the terms moves the cap with it.
The processing task's ``execution_timeout`` sits between the two, so a hung task is killed (and
retried on the same batch, which the ledger makes safe) before its messages become visible
again. Messages the run does not get to are handed back at once (visibility 0), and messages
whose send failed transiently come back after a backoff (60 s x 2^(receives-1), at most 15 min).
"""

from __future__ import annotations

from datetime import timedelta

from leadflow.followups.pacing import PAIR_PACING_SECONDS
from leadflow.followups.personalise import DEFAULT_TIMEOUT_S as OPENAI_TIMEOUT_S
from leadflow.followups.whatsapp import CONNECT_TIMEOUT_S, RetryPolicy
from leadflow.followups.whatsapp import DEFAULT_TIMEOUT_S as WHATSAPP_READ_TIMEOUT_S

DAG_ID = "whatsapp_followups"

# SQS receive: up to 10 messages per call (the SQS maximum), up to NUM_BATCHES calls per poke.
SENSOR_MAX_MESSAGES = 10
# <= 200 messages per run. Bigger runs amortise the per-run overhead (scheduling, task start-up)
# better, but the batch travels in the trigger event through the metadata DB: 200 contract-sized
# bodies (< 2 KB each) keep that well under 1 MB.
SENSOR_NUM_BATCHES = 20
SENSOR_WAIT_TIME_SECONDS = 20  # long polling, the SQS maximum: an empty queue costs 3 calls/min
SENSOR_MAX_WAIT_SECONDS = 600  # a run waits this long for its first message, then ends skipped
SENSOR_POKE_INTERVAL_SECONDS = 1  # pause between long polls (the long poll itself is the wait)
# Once a run has messages, further receives in the same poke wait only 1 s: an empty answer then
# means the backlog is drained and processing should start. (Not 0: a short poll samples only
# some SQS servers and can come back empty while messages are waiting.)
SENSOR_DRAIN_WAIT_SECONDS = 1
# The deferral's hard timeout, a backstop behind the trigger's own deadline.
SENSOR_TIMEOUT_GRACE_SECONDS = 120

PROCESS_BUDGET_SECONDS = 600
VISIBILITY_TIMEOUT_S = 1200
PROCESS_EXECUTION_TIMEOUT = timedelta(seconds=900)
# A retry past the visibility timeout is still safe: the ledger keeps every event at most once,
# and a message another run has meanwhile received is simply deleted there as a duplicate.
PROCESS_RETRIES = 2
PROCESS_RETRY_DELAY = timedelta(seconds=30)

# The terms of the visibility-timeout budget (module docstring).
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
# Defaults when the Variables are unset; the send rate is capped at Meta's default throughput.
# ~ send rate x per-message latency (60-80 msg/s x ~0.7 s) would be 64; the budget allows less.
DEFAULT_CONCURRENCY = min(64, MAX_CONCURRENCY)
DEFAULT_SEND_RATE = 60.0
MAX_SEND_RATE = 80.0

BATCH_PREFIX = DAG_ID

assert PROCESS_BUDGET_SECONDS < PROCESS_EXECUTION_TIMEOUT.total_seconds() < VISIBILITY_TIMEOUT_S
assert worst_case_run_seconds(MAX_CONCURRENCY) <= VISIBILITY_TIMEOUT_S
