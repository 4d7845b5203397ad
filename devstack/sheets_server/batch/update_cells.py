"""batchUpdate ``updateCells``: values, formats and pivot tables written cell by cell."""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.cells import from_extended_value
from devstack.sheets_server.embedded import pivot_tables
from devstack.sheets_server.fieldmask import required_fields
from devstack.sheets_server.model import Sheet, Spreadsheet, grid_range
from devstack.sheets_server.pivots import check

# CellData fields this stand-in writes; any other masked field is refused, not silently dropped.
_WRITABLE = ("userEnteredValue", "userEnteredFormat", "pivotTable")


def _start(book: Spreadsheet, params: dict[str, Any]) -> tuple[Sheet, int, int, int | None, int | None]:
    if ("start" in params) == ("range" in params):
        raise ApiError(400, "Exactly one of 'start' or 'range' must be set.")
    if "start" in params:
        start = params["start"] or {}
        sheet = book.sheet_by_id(start.get("sheetId", 0))
        return sheet, int(start.get("rowIndex", 0)), int(start.get("columnIndex", 0)), None, None
    rng = grid_range(book, params["range"])
    return rng.sheet, rng.start_row, rng.start_col, rng.end_row, rng.end_col


def _set_pivot(book: Spreadsheet, sheet: Sheet, row: int, col: int, pivot: Any) -> None:
    pivots = [p for p in pivot_tables(sheet) if tuple(p["anchor"]) != (row, col)]
    if pivot is not None:
        source = grid_range(book, (pivot or {}).get("source") if isinstance(pivot, dict) else None)
        width = (source.end_col if source.end_col is not None else source.sheet.column_count) - source.start_col
        check(pivot, width)
        if source.sheet is sheet and source.start_row <= row and source.start_col <= col < source.start_col + width:
            raise ApiError(400, "A pivot table cannot be placed inside its own source range.")
        pivots.append({"anchor": [row, col], "pivotTable": copy.deepcopy(pivot), "extent": [1, 1]})
    sheet.embedded["pivotTables"] = pivots


@batch_request("updateCells")
def update_cells(book: Spreadsheet, params: dict[str, Any]) -> None:
    paths = required_fields(params)
    if "*" in paths:
        paths = list(_WRITABLE)
    unknown = sorted({p for p in paths if p.split(".")[0] not in _WRITABLE})
    if unknown:
        raise ApiError(501, f"The stand-in does not write CellData fields {unknown}")
    sheet, row0, col0, end_row, end_col = _start(book, params)
    format_paths = [p for p in paths if p.split(".")[0] == "userEnteredFormat"]
    if end_row is not None and "userEnteredValue" in paths:
        # Google: "If the data in rows does not cover the entire requested range, the fields
        # matching those set in fields will be cleared." (values here; formats stay as they are)
        given = params.get("rows") or []
        for row in range(row0, min(end_row, len(sheet.rows))):
            cells = sheet.row_for_write(row)
            covered = len((given[row - row0] or {}).get("values") or []) if row - row0 < len(given) else 0
            for col in range(col0 + covered, min(end_col if end_col is not None else len(cells), len(cells))):
                cells[col] = None
    for r, row_data in enumerate(params.get("rows") or []):
        for c, cell in enumerate((row_data or {}).get("values") or []):
            row, col = row0 + r, col0 + c
            if (end_row is not None and row >= end_row) or (end_col is not None and col >= end_col):
                raise ApiError(400, "The rows and values do not fit in the range.")
            if row >= sheet.row_count or col >= sheet.column_count:
                raise ApiError(
                    400,
                    f"Range exceeds grid limits. Max rows: {sheet.row_count}, max columns: {sheet.column_count}",
                )
            cell = cell or {}
            if "userEnteredValue" in paths:
                sheet.set_cell(row, col, from_extended_value(cell.get("userEnteredValue")))
            if format_paths:
                sheet.formats.append(
                    {
                        "range": {"sheetId": sheet.sheet_id, "startRowIndex": row, "endRowIndex": row + 1,
                                  "startColumnIndex": col, "endColumnIndex": col + 1},
                        "userEnteredFormat": copy.deepcopy(cell.get("userEnteredFormat", {})),
                        "fields": ",".join(format_paths),
                    }
                )  # fmt: skip
            if "pivotTable" in paths:
                _set_pivot(book, sheet, row, col, cell.get("pivotTable"))
    # Only the rows this request touched can have gained trailing blanks: a write costs what it
    # writes, not the size of its tab.
    sheet.compact(row0, max(row0 + len(params.get("rows") or []), end_row or 0))

