"""Drive the stand-ins' control API (``/_control/...``) from tests and scripts.

from devstack import clients
clients.inject_faults(url, [{"count": 2, "status": 429, "error_code": 130429}])
clients.set_settings(url, latency=0.05)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import requests

DEFAULT_TIMEOUT = 10.0


class ControlError(RuntimeError):
    """The control API refused a request (bad fault spec, unknown setting, ...)."""


def _control(base_url: str, method: str, name: str, payload: Any = None) -> Any:
    url = f"{base_url.rstrip('/')}/_control/{name}"
    response = requests.request(method, url, json=payload, timeout=DEFAULT_TIMEOUT)
    if not response.ok:
        raise ControlError(f"{method} {url} -> {response.status_code}: {response.text}")
    return response.json()


def inject_faults(base_url: str, faults: Iterable[Mapping[str, Any]]) -> int:
    """Queue faults; returns how many are pending. Keys: count, status, body, error_code, message,
    delay, path_contains (see devstack._http)."""
    return int(_control(base_url, "POST", "faults", {"faults": [dict(f) for f in faults]})["queued"])


def set_settings(base_url: str, **settings: Any) -> dict[str, Any]:
    """Merge settings (``latency`` and the service's own); returns all current settings."""
    return dict(_control(base_url, "POST", "settings", settings)["settings"])


def reset(base_url: str) -> None:
    """Forget faults, settings, the call log and the service's stored data."""
    _control(base_url, "POST", "reset")


def calls(base_url: str) -> list[dict[str, Any]]:
    """Every non-control request so far: method, path, status, request_bytes, response_bytes."""
    return list(_control(base_url, "GET", "calls"))


def outbox(base_url: str) -> list[dict[str, Any]]:
    """The WhatsApp stand-in's accepted messages, oldest first."""
    return list(_control(base_url, "GET", "outbox"))


def request_bodies(base_url: str) -> list[Any]:
    """The OpenAI stand-in's received request bodies (parsed JSON), oldest first."""
    return list(_control(base_url, "GET", "requests"))


def spreadsheet_list(base_url: str) -> list[dict[str, Any]]:
    """Every spreadsheet on the Sheets stand-in: ``spreadsheetId``, ``title``, tab titles."""
    return list(_control(base_url, "GET", "spreadsheets"))


def spreadsheet_state(base_url: str, spreadsheet_id: str) -> dict[str, Any]:
    """The Sheets stand-in's stored form of a spreadsheet, including formats and filters."""
    return dict(_control(base_url, "GET", f"spreadsheets/{spreadsheet_id}"))


def wait_healthy(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll ``/_control/health`` until it answers; returns its body or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(f"{base_url.rstrip('/')}/_control/health", timeout=1.0)
            if response.ok:
                return dict(response.json())
        except requests.RequestException:
            pass  # not listening yet
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{base_url} not healthy after {timeout}s")
        time.sleep(0.05)
