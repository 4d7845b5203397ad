"""Names that tie the code, the docs and ``airflow_settings.yaml`` together (the contract)."""

from __future__ import annotations

# Connection ids
MONGO_CONN_ID = "mongo_default"
GOOGLE_CONN_ID = "google_cloud_default"
AWS_CONN_ID = "aws_default"
OPENAI_CONN_ID = "openai_default"
WHATSAPP_CONN_ID = "whatsapp_default"

# Database and collections
DEFAULT_DATABASE = "leadflow"
USERS = "users"
INTERACTIONS = "interactions"
DELIVERIES = "followup_deliveries"
# One document per task failure alerted (dag/run/task/try): Airflow 3.3.1 can call a failure
# callback twice for one failure (leadflow.alerts).
FAILURE_ALERTS = "failure_alerts"

# Variables
VAR_OBJECT_STORE_BASE = "leadflow_object_store_base"
VAR_SESSION_SPREADSHEET = "leadflow_session_report_spreadsheet_id"
VAR_CONSOLIDATED_SPREADSHEET = "leadflow_consolidated_report_spreadsheet_id"
VAR_SHARE_WITH = "leadflow_report_share_with"
VAR_REPORT_LOOKBACK_MINUTES = "leadflow_report_lookback_minutes"
VAR_QUEUE_URL = "leadflow_followups_queue_url"
VAR_DLQ_URL = "leadflow_followups_dlq_url"
# Time-critical events (site-visit reminders) have their own queue pair and consumer
# (whatsapp_reminders), so they never wait behind a backlog of nudges.
VAR_REMINDERS_QUEUE_URL = "leadflow_reminders_queue_url"
VAR_REMINDERS_DLQ_URL = "leadflow_reminders_dlq_url"
VAR_STATUSES_QUEUE_URL = "leadflow_whatsapp_statuses_queue_url"
VAR_STATUSES_DLQ_URL = "leadflow_whatsapp_statuses_dlq_url"
VAR_OPENAI_MODEL = "leadflow_openai_model"
VAR_WHATSAPP_TEMPLATES = "leadflow_whatsapp_templates"
VAR_FOLLOWUP_CONCURRENCY = "leadflow_followup_concurrency"
VAR_FOLLOWUP_SEND_RATE = "leadflow_followup_send_rate_per_second"
VAR_ALERTS_SNS_TOPIC = "leadflow_alerts_sns_topic_arn"

# Defaults used when a Variable is unset
DEFAULT_OBJECT_STORE_BASE = "file:///tmp/leadflow-objects/"
DEFAULT_LOOKBACK_MINUTES = 15
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

# Airflow configuration options of our own (airflow.cfg section [leadflow], or the environment as
# AIRFLOW__LEADFLOW__<OPTION>). Read when a DAG file is parsed, which a Variable must not be (a
# metadata-DB query on every parse); on MWAA they are "Airflow configuration options".
CONF_SECTION = "leadflow"
# The first retry's delay of every task on the shared defaults (dag_defaults); each further retry
# doubles it up to the cap. The tests set 0 so a run that exhausts its retries takes seconds.
CONF_TASK_RETRY_DELAY_SECONDS = "task_retry_delay_seconds"
DEFAULT_TASK_RETRY_DELAY_SECONDS = 30

# Pools
GOOGLE_SHEETS_POOL = "google_sheets"

# SQS queue names (the URLs come from Variables)
FOLLOWUPS_QUEUE = "leadflow-followups"
FOLLOWUPS_DLQ = "leadflow-followups-dlq"
REMINDERS_QUEUE = "leadflow-reminders"
REMINDERS_DLQ = "leadflow-reminders-dlq"

REPORT_TIMEZONE = "Asia/Kolkata"
DEFAULT_PHONE_REGION = "IN"
