"""Times written for people: IST with its explicit offset, or UTC said explicitly.

The sales and data teams think in IST; logs, run summaries and alerts must never leave a reader
guessing which clock a time is on. ``ist()`` renders ``2026-11-20 10:00:00 +05:30``, ``utc()``
renders ``2026-11-20 04:30:00 UTC``. A naive datetime is taken as UTC (what Airflow and pymongo
hand out); an ISO string is parsed first, so values that arrive serialised (trigger contexts,
XCom) format the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from leadflow.config import REPORT_TIMEZONE

IST = ZoneInfo(REPORT_TIMEZONE)


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def ist(value: datetime | str | None, *, seconds: bool = True) -> str:
    """``YYYY-MM-DD HH:MM[:SS] +05:30``; '' for None."""
    if value is None or value == "":
        return ""
    shown = _aware(value).astimezone(IST)
    offset = shown.strftime("%z")
    return shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + f" {offset[:3]}:{offset[3:]}"


def utc(value: datetime | str | None) -> str:
    """``YYYY-MM-DD HH:MM:SS UTC``; '' for None."""
    if value is None or value == "":
        return ""
    return _aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def now_ist() -> str:
    return ist(datetime.now(UTC))


def ist_fields(values: Mapping[str, Any] | None, *names: str) -> dict[str, Any] | None:
    """A copy of ``values`` with the times under ``names`` rendered by :func:`ist`, the rest as
    they are: for summaries built from what a task stored as UTC ISO text (XCom)."""
    if values is None:
        return None
    return {key: ist(value) if key in names else value for key, value in values.items()}
