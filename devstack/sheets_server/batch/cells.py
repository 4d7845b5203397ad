"""batchUpdate requests on cells: repeatCell, basic filters, sortRange."""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.cells import Cell, Formula, from_extended_value
from devstack.sheets_server.fieldmask import required_fields
from devstack.sheets_server.model import Spreadsheet, grid_range, grid_range_json


@batch_request("repeatCell")
def _repeat_cell(book: Spreadsheet, params: dict[str, Any]) -> None:
    rng = grid_range(book, params.get("range") or {})
    cell = params.get("cell") or {}
    paths = required_fields(params)
    if any(p == "*" or p.startswith("userEnteredFormat") for p in paths):
        rng.sheet.formats.append(
            {
                "range": grid_range_json(rng),
                "userEnteredFormat": copy.deepcopy(cell.get("userEnteredFormat", {})),
                "fields": params["fields"],
            }
        )
    if any(p == "*" or p.startswith("userEnteredValue") for p in paths):
        value = from_extended_value(cell.get("userEnteredValue"))
        start_row, end_row, start_col, end_col = rng.bounds()
        for row in range(start_row, end_row):
            for col in range(start_col, end_col):
                rng.sheet.set_cell(row, col, value)
        rng.sheet.compact()


@batch_request("setBasicFilter")
def _set_basic_filter(book: Spreadsheet, params: dict[str, Any]) -> None:
    spec = copy.deepcopy(params.get("filter") or {})
    rng = grid_range(book, spec.get("range") or {})
    spec["range"] = grid_range_json(rng)
    rng.sheet.basic_filter = spec


@batch_request("clearBasicFilter")
def _clear_basic_filter(book: Spreadsheet, params: dict[str, Any]) -> None:
    book.sheet_by_id(params.get("sheetId", 0)).basic_filter = None


def _sort_key(value: Cell) -> tuple[int, Any]:
    # Approximates the UI's order: numbers, then text (case-insensitive), then booleans.
    if isinstance(value, bool):
        return 2, value
    if isinstance(value, int | float):
        return 0, value
    text = value.text if isinstance(value, Formula) else str(value)
    return 1, text.casefold()


@batch_request("sortRange")
def _sort_range(book: Spreadsheet, params: dict[str, Any]) -> None:
    rng = grid_range(book, params.get("range") or {})
    specs = params.get("sortSpecs") or []
    if not specs:
        raise ApiError(400, "sortSpecs must not be empty")
    sheet = rng.sheet
    start_row, end_row, start_col, end_col = rng.bounds()
    end_row = min(end_row, len(sheet.rows))
    end_col = min(end_col, max((len(cells) for cells in sheet.rows), default=0))
    width = max(end_col - start_col, 0)
    block = [(sheet.rows[r][start_col:end_col] + [None] * width)[:width] for r in range(start_row, end_row)]
    # Stable sorts from the least significant spec; empty cells sort last in both directions.
    for spec in reversed(specs):
        column = int(spec.get("dimensionIndex", 0)) - start_col
        if not 0 <= column < width:
            continue
        descending = spec.get("sortOrder", "ASCENDING") == "DESCENDING"
        filled = [cells for cells in block if cells[column] is not None]
        empty = [cells for cells in block if cells[column] is None]
        filled.sort(key=lambda cells, col=column: _sort_key(cells[col]), reverse=descending)
        block = filled + empty
    for offset, cells in enumerate(block):
        for c, value in enumerate(cells):
            sheet.set_cell(start_row + offset, start_col + c, value)
    sheet.compact()
