"""Reading and writing values matrices (the spreadsheets.values endpoints' core)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.a1 import column_letters
from devstack.sheets_server.cells import Cell, Skip, transpose
from devstack.sheets_server.model import CellRange, raw_cells

MAX_CELL_CHARS = 50_000
CELL_TOO_LONG = "Your input contains more than the maximum of 50000 characters in a single cell."


def value_range(rng: CellRange, render: Callable[[Cell], Any], major: str) -> dict[str, Any]:
    out: dict[str, Any] = {"range": rng.a1(), "majorDimension": major}
    values = [[render(value) for value in cells] for cells in raw_cells(rng, major)]
    if values:  # the real API omits "values" for an empty range
        out["values"] = values
    return out


def write_values(rng: CellRange, values: Any, major: str, convert: Callable[[Any], Cell | Skip]) -> dict[str, Any]:
    """Write a values matrix at ``rng``'s top-left corner; returns the UpdateValuesResponse counts."""
    if not isinstance(values, list) or not all(isinstance(cells, list) for cells in values):
        raise ApiError(400, "Invalid value at 'data.values': expected a list of lists")
    matrix = values if major == "ROWS" else transpose(values)
    height, width = len(matrix), max((len(cells) for cells in matrix), default=0)
    if not height or not width:
        return {"updatedRange": rng.a1()}
    if rng.is_single_cell():
        # A single cell is only an anchor: the real API writes the whole matrix from there.
        rng = CellRange(rng.sheet, rng.start_row, None, rng.start_col, None)
    if rng.end_row is not None and rng.start_row + height > rng.end_row:
        raise ApiError(
            400,
            f"Requested writing within range [{rng.a1()}], but tried writing to row [{rng.start_row + height}]",
        )
    if rng.end_col is not None and rng.start_col + width > rng.end_col:
        last_column = column_letters(rng.start_col + width - 1)
        raise ApiError(400, f"Requested writing within range [{rng.a1()}], but tried writing to column [{last_column}]")
    sheet = rng.sheet
    sheet.grow(rng.start_row + height, rng.start_col + width)
    updated = 0
    for r, cells in enumerate(matrix):
        for c, raw in enumerate(cells):
            try:
                value = convert(raw)
            except ValueError as exc:
                raise ApiError(400, f"Invalid values[{r}][{c}]: {exc}") from None
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                raise ApiError(400, CELL_TOO_LONG)
            if not isinstance(value, Skip):
                sheet.set_cell(rng.start_row + r, rng.start_col + c, value)
                updated += 1
    sheet.compact()
    written = CellRange(sheet, rng.start_row, rng.start_row + height, rng.start_col, rng.start_col + width)
    return {
        "updatedRange": written.a1(),
        "updatedRows": height,
        "updatedColumns": width,
        "updatedCells": updated,
    }


def clear_values(rng: CellRange) -> None:
    _, end_row, start_col, end_col = rng.bounds()
    sheet = rng.sheet
    for row in range(rng.start_row, min(end_row, len(sheet.rows))):
        if any(v is not None for v in sheet.rows[row][start_col:end_col]):
            cells = sheet.row_for_write(row)
            for c in range(start_col, min(end_col, len(cells))):
                cells[c] = None
    rng.sheet.compact()
