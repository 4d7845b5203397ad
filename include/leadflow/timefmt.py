"""Times written for people: IST with its explicit offset, or UTC said explicitly.

The sales and data teams think in IST; logs, run summaries and alerts must never leave a reader
guessing which clock a time is on. ``ist()`` renders ``2026-11-20 10:00:00 +05:30``, ``utc()``
renders ``2026-11-20 04:30:00 UTC``. A naive datetime is taken as UTC (what Airflow and pymongo
hand out); an ISO string is parsed first, so values that arrive serialised (trigger contexts,
XCom) format the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
