"""Task defaults every leadflow DAG shares: owner, retries with exponential backoff, alerting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from leadflow.alerts import FailureAlert
from leadflow.config import CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS, DEFAULT_TASK_RETRY_DELAY_SECONDS

OWNER = "data-team"


def retry_delay() -> timedelta:
    """The first retry's delay, from Airflow's configuration: ``[leadflow] task_retry_delay_seconds``."""
    from airflow.sdk import conf

    raw = conf.get(CONF_SECTION, CONF_TASK_RETRY_DELAY_SECONDS, fallback=str(DEFAULT_TASK_RETRY_DELAY_SECONDS))
    name = f"[{CONF_SECTION}] {CONF_TASK_RETRY_DELAY_SECONDS}"
    try:
        seconds = float(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from error
    if not 0 <= seconds <= timedelta.max.total_seconds():  # NaN fails this too
        raise ValueError(f"{name} must be a number of seconds >= 0, got {raw!r}")
    return timedelta(seconds=seconds)


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": retry_delay(),
        # Multiplier: 30 s, 60 s, 120 s ... capped below (Airflow waits at least 1 s).
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": [FailureAlert()],
    }
    args.update(overrides)
    return args
