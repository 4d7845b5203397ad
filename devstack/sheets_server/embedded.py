"""Objects embedded in a sheet: charts, conditional formats and pivot tables, kept as Google does.

They live in ``Sheet.embedded`` (persisted with the sheet) under the names the API uses:
``charts`` and ``conditionalFormats`` are returned by ``spreadsheets.get`` as stored;
``pivotTables`` holds each pivot's anchor cell, its definition and the size of the output it
last drew. Pivot outputs are recomputed from their sources on every committed change (and by
the HTML view on open), and written into the grid like Sheets does, so ``values.get`` reads them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from devstack.sheets_server.model import Sheet, Spreadsheet
from devstack.sheets_server.pivots import compute

REF_ERROR = "#REF!"


def charts(sheet: Sheet) -> list[dict[str, Any]]:
    return sheet.embedded.setdefault("charts", [])


def conditional_formats(sheet: Sheet) -> list[dict[str, Any]]:
    return sheet.embedded.setdefault("conditionalFormats", [])


def pivot_tables(sheet: Sheet) -> list[dict[str, Any]]:
    return sheet.embedded.setdefault("pivotTables", [])


def api_fields(sheet: Sheet) -> dict[str, Any]:
    """The sheet's embedded objects as ``spreadsheets.get`` returns them (empty lists omitted)."""
    return {key: sheet.embedded[key] for key in ("charts", "conditionalFormats") if sheet.embedded.get(key)}


def all_chart_ids(book: Spreadsheet) -> set[int]:
    return {int(chart["chartId"]) for sheet in book.sheets for chart in charts(sheet)}


def _source_cells(book: Spreadsheet, source: dict[str, Any]) -> list[list[Any]] | None:
    sheet = next((s for s in book.sheets if s.sheet_id == source.get("sheetId", 0)), None)
    if sheet is None:
        return None
    start_row, start_col = source.get("startRowIndex", 0), source.get("startColumnIndex", 0)
    # An open end reaches the grid's edge: empty rows below the data are part of the source.
    end_row = source.get("endRowIndex", sheet.row_count)
    end_col = source.get("endColumnIndex", sheet.column_count)
    width = end_col - start_col
    cells = []
    for row in range(start_row, end_row):
        stored = sheet.rows[row][start_col:end_col] if row < len(sheet.rows) else []
        cells.append([getattr(v, "text", v) for v in stored] + [None] * (width - len(stored)))
    return cells


def refresh_pivots(book: Spreadsheet, now: datetime) -> None:
    """Redraw every pivot table of ``book`` from its source, as Sheets does after a change."""
    time_zone = str(book.properties.get("timeZone") or "Etc/GMT")
    for sheet in book.sheets:
        pivots = sorted(pivot_tables(sheet), key=lambda p: (p["anchor"][0], p["anchor"][1]))
        if not pivots:
            continue
        for pivot in pivots:  # clear the previous outputs first: a pivot may have shrunk
            (row, col), (height, width) = pivot["anchor"], pivot.get("extent", (1, 1))
            for r in range(row, row + height):
                for c in range(col, col + width):
                    if (r, c) != (row, col):
                        sheet.set_cell(r, c, None)
        drawn: set[tuple[int, int]] = set()
        for pivot in pivots:
            row, col = pivot["anchor"]
            source = _source_cells(book, pivot["pivotTable"]["source"])
            grid = compute(pivot["pivotTable"], source, time_zone, now) if source else [[REF_ERROR]]
            cells = {(row + r, col + c): v for r, line in enumerate(grid) for c, v in enumerate(line)}
            # Sheets refuses to draw over other data (or another pivot): the anchor shows #REF!.
            blocked = any(key in drawn or (key != (row, col) and _value(sheet, *key) is not None) for key in cells)
            if blocked or any(r >= sheet.row_count or c >= sheet.column_count for r, c in cells):
                cells = {(row, col): REF_ERROR}
            for (r, c), value in cells.items():
                sheet.set_cell(r, c, value)
            drawn |= set(cells)
            pivot["extent"] = [max(r for r, _ in cells) - row + 1, max(c for _, c in cells) - col + 1]
        sheet.compact()


def _value(sheet: Sheet, row: int, col: int) -> Any:
    if row < len(sheet.rows) and col < len(sheet.rows[row]):
        return sheet.rows[row][col]
    return None
