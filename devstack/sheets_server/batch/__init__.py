"""spreadsheets.batchUpdate: a registry of request kinds and the all-or-nothing dispatch over it.

Each request kind is a function ``(book, params) -> reply | None`` registered with
``@batch_request("kindName")`` in a module of this package; every module here is imported on
first use, so a new kind (charts, pivots, conditional formats, ...) is a new module and nothing
else. A handler raises ApiError for bad input; the dispatcher prefixes the request's index the
way Google does and the server's commit discards the whole batch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.model import Spreadsheet

type BatchRequest = Callable[[Spreadsheet, dict[str, Any]], dict[str, Any] | None]

BATCH_REQUESTS: dict[str, BatchRequest] = {}


def batch_request(kind: str) -> Callable[[BatchRequest], BatchRequest]:
    """Register a handler for the batchUpdate request ``kind`` (e.g. ``"addChart"``)."""

    def register(handler: BatchRequest) -> BatchRequest:
        if kind in BATCH_REQUESTS and BATCH_REQUESTS[kind] is not handler:
            raise RuntimeError(f"batchUpdate request {kind!r} is registered twice")
        BATCH_REQUESTS[kind] = handler
        return handler

    return register


_loaded = False


def load_handlers() -> dict[str, BatchRequest]:
    """Import every handler module of this package once; returns the registry."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return BATCH_REQUESTS


def apply_batch(book: Spreadsheet, items: Any) -> list[dict[str, Any]]:
    """Apply ``requests`` in order to ``book`` (a copy the caller commits only if all succeed)."""
    handlers = load_handlers()
    if not items:
        raise ApiError(400, "Must specify at least one request.")
    replies: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise ApiError(400, f"Invalid requests[{index}]: each request must set exactly one kind")
        ((kind, params),) = item.items()
        if not isinstance(params, dict):
            raise ApiError(400, f"Invalid requests[{index}].{kind}: expected a JSON object")
        handler = handlers.get(kind)
        if handler is None:
            raise ApiError(
                400,
                f"Invalid JSON payload received. Unknown name \"{kind}\" at 'requests[{index}]' "
                f"(the stand-in implements: {', '.join(sorted(handlers))})",
            )
        try:
            replies.append(handler(book, params) or {})
        except ApiError as error:
            raise ApiError(error.status, f"Invalid requests[{index}].{kind}: {error.message}") from None
    return replies
