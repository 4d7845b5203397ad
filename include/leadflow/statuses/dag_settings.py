"""Names and tunables of the ``whatsapp_statuses`` DAG (the receipts pipeline).

A run's worst case bounds the visibility timeout, as for the follow-ups: receiving hands the
batch over (~60 s), applying a receipt is two MongoDB updates (≪ 1 s each), and a 131047 receipt
costs one template send (WhatsApp read timeout 15 s, no retries: a resend is never retried
blind). No resend is *started* after ``PROCESS_BUDGET_SECONDS``; those messages go back to the
queue at once. So: 60 + 240 + 15 + slack < ``PROCESS_EXECUTION_TIMEOUT`` (420 s) <
``VISIBILITY_TIMEOUT_S`` (600 s).
"""

from __future__ import annotations

from datetime import timedelta

# The queue URL Variables' names live in leadflow.config (the shared redrive reads them too).
from leadflow.config import VAR_STATUSES_DLQ_URL, VAR_STATUSES_QUEUE_URL  # noqa: F401

DAG_ID = "whatsapp_statuses"
BATCH_PREFIX = DAG_ID

STATUSES_QUEUE = "leadflow-whatsapp-statuses"
STATUSES_DLQ = "leadflow-whatsapp-statuses-dlq"
# The SQS message attribute API Gateway fills from Meta's X-Hub-Signature-256 header.
SIGNATURE_ATTRIBUTE = "signature"
# The whatsapp_default connection extra key holding the Meta app secret (receipt signatures).
APP_SECRET_EXTRA = "app_secret"  # noqa: S105 - the name of the key, not a secret

SENSOR_MAX_MESSAGES = 10
SENSOR_NUM_BATCHES = 20  # <= 200 webhooks (~1 KB each) per run
SENSOR_WAIT_TIME_SECONDS = 20
SENSOR_MAX_WAIT_SECONDS = 600
SENSOR_POKE_INTERVAL_SECONDS = 1

PROCESS_BUDGET_SECONDS = 240
PROCESS_EXECUTION_TIMEOUT = timedelta(seconds=420)
VISIBILITY_TIMEOUT_S = 600
PROCESS_RETRIES = 2
PROCESS_RETRY_DELAY = timedelta(seconds=30)
# A receipt that could not be applied (MongoDB down, an account-level error on a resend) comes
# back after this long.
REDELIVERY_DELAY_SECONDS = 60

assert PROCESS_BUDGET_SECONDS < PROCESS_EXECUTION_TIMEOUT.total_seconds() < VISIBILITY_TIMEOUT_S
