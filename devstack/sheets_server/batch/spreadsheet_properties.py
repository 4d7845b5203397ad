"""batchUpdate ``updateSpreadsheetProperties`` (title, locale, time zone, ...)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.fieldmask import apply_field_mask, required_fields
from devstack.sheets_server.model import Spreadsheet


@batch_request("updateSpreadsheetProperties")
def update_spreadsheet_properties(book: Spreadsheet, params: dict[str, Any]) -> None:
    given = params.get("properties") or {}
    zone = given.get("timeZone")
    if zone is not None:
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(400, f"Invalid timeZone: {zone}") from None
    properties = dict(book.properties)
    apply_field_mask(properties, given, required_fields(params))
    if not properties.get("title"):
        raise ApiError(400, "A spreadsheet's title cannot be empty.")
    book.properties = properties
