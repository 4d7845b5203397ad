"""Objects embedded in a sheet: charts, conditional formats and pivot tables, kept as Google does.

They live in ``Sheet.embedded`` (persisted with the sheet) under the names the API uses:
``charts`` and ``conditionalFormats`` are returned by ``spreadsheets.get`` as stored;
``pivotTables`` holds each pivot's anchor cell, its definition and the size of the output it
last drew. Pivot outputs are written into the grid like Sheets does, so ``values.get`` reads
them. Sheets recomputes a pivot when its source changes; here the work waits for a read that
can see the output (a values read of the pivot's sheet, grid data, the control state, the HTML
view), so the hourly writes into a 100k-row tab do not pay for it on every commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

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


def _source_columns(
    book: Spreadsheet, source: dict[str, Any], cache: dict[tuple[int, ...], list[Any]]
) -> tuple[list[Any], Callable[[int], list[Any]], int] | None:
    """(header, column reader, row count) of a pivot's source, or None if its sheet is gone.

    An open end reaches the grid's edge, so the empty rows below the data belong to the source;
    they all look alike, so one blank record stands for them.
    """
    sheet = next((s for s in book.sheets if s.sheet_id == source.get("sheetId", 0)), None)
    if sheet is None:
        return None
    start_row, start_col = source.get("startRowIndex", 0), source.get("startColumnIndex", 0)
    end_row = min(source.get("endRowIndex", sheet.row_count), sheet.row_count)
    stored = sheet.rows[start_row + 1 : min(end_row, len(sheet.rows))]
    blank_tail = end_row > max(len(sheet.rows), start_row + 1)
    header_row = sheet.rows[start_row] if start_row < len(sheet.rows) else []
    width = source.get("endColumnIndex", sheet.column_count) - start_col
    header = [header_row[start_col + c] if start_col + c < len(header_row) else None for c in range(width)]

    def column(offset: int) -> list[Any]:
        key = (sheet.sheet_id, start_row, end_row, start_col + offset)
        if key not in cache:
            col = start_col + offset
            values = [row[col] if col < len(row) else None for row in stored]
            cache[key] = [*values, None] if blank_tail else values
        return cache[key]

    return header, column, len(stored) + (1 if blank_tail else 0)


def mark_stale(book: Spreadsheet) -> None:
    """After a change: pivots are redrawn by the next read that can see them (see ``stale_sheets``)."""
    for sheet in book.sheets:
        if sheet.embedded.get("pivotTables"):
            sheet.embedded["stale"] = True


def stale_sheets(book: Spreadsheet, now: datetime) -> set[int]:
    """Sheets whose pivots must be redrawn before a read: changed since, or drawn on another day
    (relative dates such as "the past week" move at midnight, as Sheets recomputes on open)."""
    today = now.astimezone(ZoneInfo(str(book.properties.get("timeZone") or "Etc/GMT"))).date().isoformat()
    return {
        sheet.sheet_id
        for sheet in book.sheets
        if sheet.embedded.get("pivotTables") and (sheet.embedded.get("stale") or sheet.embedded.get("drawnOn") != today)
    }


def refresh_pivots(book: Spreadsheet, now: datetime) -> None:
    """Redraw every pivot table of ``book`` from its source, as Sheets does after a change."""
    time_zone = str(book.properties.get("timeZone") or "Etc/GMT")
    cache: dict[tuple[int, ...], list[Any]] = {}
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
            source = _source_columns(book, pivot["pivotTable"]["source"], cache)
            grid = compute(pivot["pivotTable"], *source, time_zone, now) if source else [[REF_ERROR]]
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
        sheet.embedded["stale"] = False
        sheet.embedded["drawnOn"] = now.astimezone(ZoneInfo(time_zone)).date().isoformat()


def _value(sheet: Sheet, row: int, col: int) -> Any:
    if row < len(sheet.rows) and col < len(sheet.rows[row]):
        return sheet.rows[row][col]
    return None
