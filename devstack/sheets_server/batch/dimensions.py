"""batchUpdate requests on rows and columns: sizes, deletion, appending."""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.fieldmask import required_fields
from devstack.sheets_server.model import Spreadsheet, dimension_range


@batch_request("autoResizeDimensions")
def _auto_resize_dimensions(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, *_ = dimension_range(book, params.get("dimensions"))
    sheet.dimension_changes.append({"autoResizeDimensions": copy.deepcopy(params)})


@batch_request("updateDimensionProperties")
def _update_dimension_properties(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, *_ = dimension_range(book, params.get("range"))
    required_fields(params)
    sheet.dimension_changes.append({"updateDimensionProperties": copy.deepcopy(params)})


@batch_request("deleteDimension")
def _delete_dimension(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, dimension, start, end = dimension_range(book, params.get("range"))
    if dimension == "ROWS":
        if start == 0 and end >= sheet.row_count:
            raise ApiError(400, "You can't delete all the rows on the sheet.")
        del sheet.rows[start:end]
        sheet.grid["rowCount"] = sheet.row_count - (end - start)
    else:
        if start == 0 and end >= sheet.column_count:
            raise ApiError(400, "You can't delete all the columns on the sheet.")
        for row in range(len(sheet.rows)):
            if len(sheet.rows[row]) > start:
                del sheet.row_for_write(row)[start:end]
        sheet.grid["columnCount"] = sheet.column_count - (end - start)
    sheet.compact()


@batch_request("appendDimension")
def _append_dimension(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet = book.sheet_by_id(params.get("sheetId", 0))
    dimension, length = params.get("dimension"), params.get("length")
    if dimension not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"dimension must be ROWS or COLUMNS, got {dimension!r}")
    if not isinstance(length, int) or length < 1:
        raise ApiError(400, "length must be a positive integer")
    key = "rowCount" if dimension == "ROWS" else "columnCount"
    sheet.grid[key] = (sheet.row_count if dimension == "ROWS" else sheet.column_count) + length


@batch_request("insertDimension")
def _insert_dimension(book: Spreadsheet, params: dict[str, Any]) -> None:
    raw = params.get("range")
    if not isinstance(raw, dict) or not isinstance(raw.get("endIndex"), int):
        raise ApiError(400, "range must be a DimensionRange with startIndex and endIndex")
    sheet = book.sheet_by_id(raw.get("sheetId", 0))
    dimension, start, end = raw.get("dimension"), raw.get("startIndex", 0), raw["endIndex"]
    if dimension not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"dimension must be ROWS or COLUMNS, got {dimension!r}")
    size = sheet.row_count if dimension == "ROWS" else sheet.column_count
    if not isinstance(start, int) or not 0 <= start < end or start > size:
        raise ApiError(400, f"Invalid dimension range: startIndex {start}, endIndex {end} (grid size {size})")
    if params.get("inheritFromBefore") and start == 0:
        raise ApiError(400, "Cannot inherit properties from before the first row or column.")
    count = end - start
    if dimension == "ROWS":
        if start < len(sheet.rows):
            sheet.rows[start:start] = [[] for _ in range(count)]
        sheet.grid["rowCount"] = sheet.row_count + count
    else:
        for row in range(len(sheet.rows)):
            if start < len(sheet.rows[row]):
                sheet.row_for_write(row)[start:start] = [None] * count
        sheet.grid["columnCount"] = sheet.column_count + count
    sheet.compact()
