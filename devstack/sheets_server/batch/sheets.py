"""batchUpdate requests on tabs: addSheet, deleteSheet, updateSheetProperties."""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.fieldmask import apply_field_mask, required_fields
from devstack.sheets_server.model import DEFAULT_COLUMN_COUNT, DEFAULT_ROW_COUNT, Sheet, Spreadsheet


@batch_request("addSheet")
def add_sheet(book: Spreadsheet, params: dict[str, Any]) -> dict[str, Any]:
    props = copy.deepcopy(params.get("properties") or {})
    number = len(book.sheets) + 1
    while book.sheet_by_title(f"Sheet{number}"):
        number += 1
    title = props.get("title") or f"Sheet{number}"
    if book.sheet_by_title(title):
        raise ApiError(400, f'A sheet with the name "{title}" already exists. Please enter another name.')
    if "sheetId" in props:
        if any(sheet.sheet_id == props["sheetId"] for sheet in book.sheets):
            raise ApiError(400, f"Sheet with id {props['sheetId']} already exists.")
    else:
        props["sheetId"] = 0 if not book.sheets else book.new_sheet_id()
    index = min(max(int(props.get("index", len(book.sheets))), 0), len(book.sheets))
    grid = {"rowCount": DEFAULT_ROW_COUNT, "columnCount": DEFAULT_COLUMN_COUNT, **props.get("gridProperties", {})}
    # The API's key order, so responses and the stored JSON read naturally.
    sheet = Sheet(
        {
            "sheetId": props.pop("sheetId"),
            "title": title,
            "index": index,
            "sheetType": "GRID",
            "gridProperties": grid,
            **{k: v for k, v in props.items() if k not in ("title", "index", "sheetType", "gridProperties")},
        }
    )
    book.sheets.insert(index, sheet)
    book.reindex()
    return {"addSheet": {"properties": copy.deepcopy(sheet.properties)}}


@batch_request("deleteSheet")
def _delete_sheet(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet = book.sheet_by_id(params.get("sheetId", 0))
    if len(book.sheets) == 1:
        raise ApiError(400, "You can't remove all the sheets in a document.")
    book.sheets.remove(sheet)
    book.reindex()


@batch_request("updateSheetProperties")
def _update_sheet_properties(book: Spreadsheet, params: dict[str, Any]) -> None:
    given = params.get("properties") or {}
    sheet = book.sheet_by_id(given.get("sheetId", 0))
    props = copy.deepcopy(sheet.properties)
    apply_field_mask(props, given, required_fields(params))
    props["sheetId"], props["sheetType"] = sheet.sheet_id, sheet.properties.get("sheetType", "GRID")
    title = props.get("title")
    if not title:
        raise ApiError(400, "A sheet's title cannot be empty.")
    if title != sheet.title and book.sheet_by_title(title):
        raise ApiError(400, f'A sheet with the name "{title}" already exists. Please enter another name.')
    grid = props.setdefault("gridProperties", {})
    grid.setdefault("rowCount", sheet.row_count)
    grid.setdefault("columnCount", sheet.column_count)
    for key in ("frozenRowCount", "frozenColumnCount"):
        if not grid.get(key):
            grid.pop(key, None)  # proto3 JSON omits zero values
    sheet.properties = props
    new_index = props.get("index")
    current = book.sheets.index(sheet)
    if isinstance(new_index, int) and new_index != current:
        # Google counts the index "before the move": of S1, S2, S3, moving S1 ahead of S2 takes
        # index 2 (SheetProperties.index), so a move to the right lands one place short.
        book.sheets.remove(sheet)
        landing = new_index - 1 if new_index > current else new_index
        book.sheets.insert(min(max(landing, 0), len(book.sheets)), sheet)
    book.reindex()
