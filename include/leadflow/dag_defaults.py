"""Task defaults every leadflow DAG shares: owner, retries with exponential backoff, alerting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from leadflow.alerts import FailureAlert

OWNER = "data-team"


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        # Multiplier: 30 s, 60 s, 120 s ... capped below.
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": [FailureAlert()],
    }
    args.update(overrides)
    return args
