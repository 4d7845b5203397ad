"""Tunables of the ``whatsapp_followups`` DAG, and the arithmetic that ties them together.

The one invariant that matters: a message received by a run must stay invisible to SQS's other
consumers (and to the next run) until the run has recorded its outcome, so the receive's
visibility timeout below must exceed the longest a run can take. :mod:`.budget` computes that
worst case from the clients' own timeouts and retry policies and caps the concurrency Variable
so that it holds (with 64 threads it would not).

The processing task's ``execution_timeout`` sits between the two, so a hung task is killed (and
retried on the same batch, which the ledger makes safe) before its messages become visible
again. Messages the run does not get to are handed back at once (visibility 0), and messages
whose send failed transiently come back after a backoff (60 s x 2^(receives-1), at most 15 min).
"""

from __future__ import annotations

from datetime import timedelta

from leadflow.messaging.defaults import DRAIN_WAIT_SECONDS, MAX_WAIT_SECONDS, TIMEOUT_GRACE_SECONDS

DAG_ID = "whatsapp_followups"
# Site-visit reminders have their own queue and their own consumer, the same tasks on another
# queue pair: a reminder never waits behind nudges, not even behind a run busy with 200 of them.
REMINDERS_DAG_ID = "whatsapp_reminders"

# SQS receive: up to 10 messages per call (the SQS maximum), up to NUM_BATCHES calls per poke.
SENSOR_MAX_MESSAGES = 10
# <= 200 messages per run. Bigger runs amortise the per-run overhead (scheduling, task start-up)
# better, but the processing budget and the thread pool are sized for about this many. (The
# trigger writes the batch to the object store itself; its event holds only the ids.)
SENSOR_NUM_BATCHES = 20
SENSOR_WAIT_TIME_SECONDS = 20  # long polling, the SQS maximum: an empty queue costs 3 calls/min
SENSOR_MAX_WAIT_SECONDS = MAX_WAIT_SECONDS  # a run waits this long for its first message, then ends skipped
SENSOR_POKE_INTERVAL_SECONDS = 1  # pause between long polls (the long poll itself is the wait)
SENSOR_DRAIN_WAIT_SECONDS = DRAIN_WAIT_SECONDS  # see leadflow.messaging.defaults
SENSOR_TIMEOUT_GRACE_SECONDS = TIMEOUT_GRACE_SECONDS

PROCESS_BUDGET_SECONDS = 600
VISIBILITY_TIMEOUT_S = 1200
PROCESS_EXECUTION_TIMEOUT = timedelta(seconds=900)
# A retry past the visibility timeout is still safe: the ledger keeps every event at most once,
# and a message another run has meanwhile received is simply deleted there as a duplicate.
PROCESS_RETRIES = 2
PROCESS_RETRY_DELAY = timedelta(seconds=30)

# Defaults when the Variables are unset; the send rate is capped at Meta's default throughput.
# The concurrency default and its cap come from the visibility-timeout budget (budget.py).
DEFAULT_SEND_RATE = 60.0
MAX_SEND_RATE = 80.0
# Both consumers send from one business number at once: Meta's 80 msg/s is shared, with this
# much kept for the reminders and the rest the most the nudges' Variable can ask for.
REMINDER_SEND_RATE = 10.0
REMINDER_CONCURRENCY = 16  # ~ REMINDER_SEND_RATE x per-message latency, with room for slow replies
NUDGE_MAX_SEND_RATE = MAX_SEND_RATE - REMINDER_SEND_RATE
# While an account-level error lasts, unsent messages come back as fresh copies after this long
# (see leadflow.followups.requeue): each run of the outage fails and alerts once, so the nudges
# come back every 15 min (SQS's longest delay); reminders every 5, so one goes out within 5
# minutes of the fix (a visit is 15 min after its reminder is due).
OUTAGE_REQUEUE_DELAY_S = 900
REMINDER_OUTAGE_REQUEUE_DELAY_S = 300

BATCH_PREFIX = DAG_ID
REMINDERS_BATCH_PREFIX = REMINDERS_DAG_ID

assert PROCESS_BUDGET_SECONDS < PROCESS_EXECUTION_TIMEOUT.total_seconds() < VISIBILITY_TIMEOUT_S
