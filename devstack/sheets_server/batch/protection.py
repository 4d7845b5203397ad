"""batchUpdate requests on protected ranges: addProtectedRange, deleteProtectedRange."""

from __future__ import annotations

import copy
import random
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.model import Spreadsheet, grid_range, grid_range_json


@batch_request("addProtectedRange")
def _add_protected_range(book: Spreadsheet, params: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(params.get("protectedRange") or {})
    if "protectedRangeId" in spec:
        raise ApiError(400, "protectedRangeId must not be set when adding a protected range")
    if "namedRangeId" in spec:
        raise ApiError(400, "The stand-in does not implement named ranges")
    rng = grid_range(book, spec.get("range") or {})
    if spec.get("warningOnly") and spec.get("editors"):
        raise ApiError(400, "Cannot set editors on a warning-only protected range.")
    spec["range"] = grid_range_json(rng)
    spec["protectedRangeId"] = random.randint(1, 2**31 - 1)
    spec.setdefault("requestingUserCanEdit", True)
    rng.sheet.protected_ranges.append(spec)
    return {"addProtectedRange": {"protectedRange": copy.deepcopy(spec)}}


@batch_request("deleteProtectedRange")
def _delete_protected_range(book: Spreadsheet, params: dict[str, Any]) -> None:
    wanted = params.get("protectedRangeId")
    for sheet in book.sheets:
        for item in sheet.protected_ranges:
            if item["protectedRangeId"] == wanted:
                sheet.protected_ranges.remove(item)
                return
    raise ApiError(400, f"No protected range with id: {wanted}")
