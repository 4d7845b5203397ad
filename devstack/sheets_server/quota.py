"""Google's per-minute request quotas of the Sheets API v4, enforced by the stand-in.

Google (developers.google.com/workspace/sheets/api/limits): read requests and write requests are
each limited per minute per project (300) and per minute per user per project (60); a request over
a limit is answered HTTP 429 ``RESOURCE_EXHAUSTED`` with a ``google.rpc.ErrorInfo`` detail whose
reason is ``RATE_LIMIT_EXCEEDED`` (no ``errors[]``, no ``Retry-After``), and the client is to back off
exponentially. A read is any method that retrieves (``get``, ``values.get``, ``values.batchGet``), a
write any that changes (``create``, ``batchUpdate``, ``values.update/append/clear``, ``copyTo``).
Drive calls (files, permissions) count against Drive's quota, not these.

The stand-in is at least as strict: a *sliding* window of ``window_seconds`` per limit (Google
refills each minute; a sliding window never lets two minutes' worth through around a refill). A
refused request does not use quota. The user is the caller's bearer token (one service account =
one user); the project is everyone who calls this stand-in. The counters are forgotten by
``/_control/reset`` with the rest of the state, so each test starts with a full minute's quota.

Setting ``quota`` (``/_control/settings``): ``null`` turns it off; otherwise any of
``read_per_minute``, ``read_per_minute_per_user``, ``write_per_minute``,
``write_per_minute_per_user`` and ``window_seconds``, the rest keeping Google's figures.
``GET /_control/quota`` shows the requests counted in the current window and the refusals.
For a burst on demand, the generic faults do it: ``{"count": N, "status": 429}`` answers the next
N requests with the same body (see :func:`quota_error`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from devstack._http import ApiError

GOOGLE_QUOTA: dict[str, float] = {
    "read_per_minute": 300,
    "read_per_minute_per_user": 60,
    "write_per_minute": 300,
    "write_per_minute_per_user": 60,
    "window_seconds": 60.0,
}
_NAMES = {"read": ("Read requests", "ReadRequests"), "write": ("Write requests", "WriteRequests")}


def quota_setting(value: Any) -> dict[str, float] | None:
    """The ``quota`` setting: None (off) or Google's figures overridden by the given keys."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(GOOGLE_QUOTA):
        raise ValueError(f"must be null or an object with keys from {sorted(GOOGLE_QUOTA)}")
    for key, limit in value.items():
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
            raise ValueError(f"{key} must be a positive number")
    return {**GOOGLE_QUOTA, **value}


def request_kind(method: str, path: str) -> str | None:
    """``read``/``write`` for a Sheets API request; None for what the Sheets quota does not count."""
    if not path.startswith("/v4/spreadsheets"):
        return None
    return "read" if method == "GET" else "write"


def quota_error(kind: str, per_user: bool, limit: float) -> ApiError:
    """Google's 429 for a request over the ``kind`` quota (per user, or per project)."""
    metric, prefix = _NAMES[kind]
    scope = " per user" if per_user else ""
    message = (
        f"Quota exceeded for quota metric '{metric}' and limit '{metric} per minute{scope}' "
        "of service 'sheets.googleapis.com' for consumer 'project_number:0'."
    )
    detail = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": {
            "service": "sheets.googleapis.com",
            "consumer": "projects/0",
            "quota_metric": f"sheets.googleapis.com/{kind}_requests",
            "quota_limit": f"{prefix}PerMinute{'PerUser' if per_user else 'PerProject'}",
            "quota_limit_value": str(int(limit)),
            "quota_location": "global",
        },
    }
    help_link = {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Request a higher quota limit.",
                   "url": "https://cloud.google.com/docs/quotas/help/request_increase"}],
    }  # fmt: skip
    return ApiError(429, message, "RESOURCE_EXHAUSTED", extra={"details": [detail, help_link]})


class QuotaMeter:
    """Sliding-window counts of served requests, per kind and per (kind, user)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str | None], deque[float]] = {}
        self.refused: dict[str, int] = {}

    def admit(self, quota: dict[str, float] | None, kind: str | None, user: str) -> ApiError | None:
        """Count the request and return None, or return the 429 it gets (and count nothing)."""
        if quota is None or kind is None:
            return None
        now = time.monotonic()
        with self._lock:
            project = self._window((kind, None), now, quota["window_seconds"])
            mine = self._window((kind, user), now, quota["window_seconds"])
            for window, per_user in ((mine, True), (project, False)):
                limit = quota[f"{kind}_per_minute{'_per_user' if per_user else ''}"]
                if len(window) >= limit:
                    name = f"{kind}_per_minute{'_per_user' if per_user else ''}"
                    self.refused[name] = self.refused.get(name, 0) + 1
                    return quota_error(kind, per_user, limit)
            project.append(now)
            mine.append(now)
        return None

    def _window(self, key: tuple[str, str | None], now: float, seconds: float) -> deque[float]:
        window = self._served.setdefault(key, deque())
        while window and window[0] <= now - seconds:
            window.popleft()
        return window

    def state(self, quota: dict[str, float] | None) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            counted: dict[str, int] = {}
            for (kind, user), window in list(self._served.items()):
                if quota is not None:
                    self._window((kind, user), now, quota["window_seconds"])
                counted[kind if user is None else f"{kind}:{user}"] = len(window)
            return {"quota": quota, "in_window": counted, "refused": dict(self.refused)}

    def reset(self) -> None:
        with self._lock:
            self._served.clear()
            self.refused.clear()
