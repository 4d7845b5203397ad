"""The spreadsheet model: spreadsheets, their sheets (tabs), and cell ranges over them."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.a1 import column_letters, parse_cells, quote_title, split_title
from devstack.sheets_server.cells import (
    Cell,
    cell_from_json,
    cell_to_json,
    extended_value,
    formatted,
    transpose,
    trim,
    trim_rows,
)

DEFAULT_ROW_COUNT = 1000
DEFAULT_COLUMN_COUNT = 26
CELL_LIMIT = 10_000_000
# Embedded objects spreadsheets.get returns as stored (the rest stay internal).
API_EMBEDDED = ("charts", "conditionalFormats")


@dataclass
class Sheet:
    properties: dict[str, Any]
    _rows: list[list[Cell]] = field(default_factory=list)  # trailing empty cells/rows trimmed
    formats: list[dict[str, Any]] = field(default_factory=list)  # repeatCell formats, in order
    basic_filter: dict[str, Any] | None = None
    dimension_changes: list[dict[str, Any]] = field(default_factory=list)  # resize/size requests
    protected_ranges: list[dict[str, Any]] = field(default_factory=list)
    # Charts, conditional formats, pivot tables: see devstack.sheets_server.embedded.
    embedded: dict[str, Any] = field(default_factory=dict)
    # Copy-on-write: a clone (the copy a write edits) shares its original's rows until it first
    # touches them, so a write copies the tabs it touches, not the whole spreadsheet.
    _editing: bool = field(default=False, compare=False, repr=False)
    _owned: bool = field(default=True, compare=False, repr=False)
    # The rows as stored JSON, kept while they are unchanged: a save re-encodes changed tabs only.
    _rows_json: str | None = field(default=None, compare=False, repr=False)

    # Rows (by id) this edit made its own; every other row may still be shared with the
    # committed version and is copied before it changes (``row_for_write``).
    _own_rows: set[int] = field(default_factory=set, compare=False, repr=False)

    @property
    def rows(self) -> list[list[Cell]]:
        """The rows. While a clone is edited any look may be a change: the first one copies the
        list of rows (not the rows: a row is copied when it changes, see ``row_for_write``); a
        committed sheet (``settle``) is only read, so reads never copy."""
        if self._editing:
            if not self._owned:
                self._rows = list(self._rows)
                self._own_rows = set()
                self._owned = True
            self._rows_json = None
        return self._rows

    def row_for_write(self, row: int) -> list[Cell]:
        """Row ``row``'s cells, safe to change in place: copied first if still shared."""
        rows = self.rows
        cells = rows[row]
        if self._editing and id(cells) not in self._own_rows:
            cells = cells[:]  # cells are immutable: a shallow copy is enough
            rows[row] = cells
            self._own_rows.add(id(cells))
        return cells

    @rows.setter
    def rows(self, value: list[list[Cell]]) -> None:
        self._rows, self._owned, self._rows_json = value, True, None

    def settle(self) -> None:
        """Committed: nobody edits the version it may share rows with any more."""
        self._editing = False
        self._own_rows = set()

    def rows_json(self) -> str:
        if self._rows_json is None:
            self._rows_json = json.dumps(
                [[cell_to_json(value) for value in cells] for cells in self._rows],
                ensure_ascii=False,
                separators=(",", ":"),
            )
        return self._rows_json

    @property
    def sheet_id(self) -> int:
        return int(self.properties["sheetId"])

    @property
    def title(self) -> str:
        return str(self.properties["title"])

    @property
    def grid(self) -> dict[str, Any]:
        return self.properties.setdefault("gridProperties", {})

    @property
    def row_count(self) -> int:
        return int(self.grid.get("rowCount", DEFAULT_ROW_COUNT))

    @property
    def column_count(self) -> int:
        return int(self.grid.get("columnCount", DEFAULT_COLUMN_COUNT))

    def grow(self, rows: int, columns: int) -> None:
        """Make the grid at least ``rows`` x ``columns`` (writes past the edge extend it)."""
        self.grid["rowCount"] = max(self.row_count, rows)
        self.grid["columnCount"] = max(self.column_count, columns)

    def set_cell(self, row: int, col: int, value: Cell) -> None:
        if value is None and (row >= len(self.rows) or col >= len(self.rows[row])):
            return
        while len(self.rows) <= row:
            self.rows.append([])
        cells = self.row_for_write(row)
        if len(cells) <= col:
            cells.extend([None] * (col + 1 - len(cells)))
        cells[col] = value

    def compact(self, start: int = 0, end: int | None = None) -> None:
        """Trim trailing empty cells of rows ``start:end`` (a write: the rows it touched), then
        trailing empty rows."""
        rows = self.rows
        for row in range(start, len(rows) if end is None else min(end, len(rows))):
            if rows[row] and rows[row][-1] is None:
                trim(self.row_for_write(row))
        trim_rows(rows)

    def clone(self) -> Sheet:
        return Sheet(
            copy.deepcopy(self.properties),
            self._rows,  # shared until the clone touches them (see ``rows``)
            copy.deepcopy(self.formats),
            copy.deepcopy(self.basic_filter),
            copy.deepcopy(self.dimension_changes),
            copy.deepcopy(self.protected_ranges),
            copy.deepcopy(self.embedded),
            _editing=True,
            _owned=False,
            _rows_json=self._rows_json,
        )

    def to_json(self, rows: bool = True) -> dict[str, Any]:
        return {
            "properties": self.properties,
            **({"rows": [[cell_to_json(value) for value in cells] for cells in self._rows]} if rows else {}),
            "formats": self.formats,
            "basicFilter": self.basic_filter,
            "dimensionChanges": self.dimension_changes,
            "protectedRanges": self.protected_ranges,
            "embedded": self.embedded,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Sheet:
        return cls(
            properties=raw["properties"],
            _rows=[[cell_from_json(value) for value in cells] for cells in raw.get("rows", [])],
            formats=raw.get("formats", []),
            basic_filter=raw.get("basicFilter"),
            dimension_changes=raw.get("dimensionChanges", []),
            protected_ranges=raw.get("protectedRanges", []),
            embedded=raw.get("embedded", {}),
        )


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    properties: dict[str, Any]
    sheets: list[Sheet] = field(default_factory=list)
    permissions: list[dict[str, Any]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # Drive folders; set: the file is on a shared drive

    @property
    def url(self) -> str:
        return f"https://docs.google.com/spreadsheets/d/{self.spreadsheet_id}/edit"

    def sheet_by_title(self, title: str) -> Sheet | None:
        return next((sheet for sheet in self.sheets if sheet.title == title), None)

    def sheet_by_id(self, sheet_id: Any) -> Sheet:
        for sheet in self.sheets:
            if sheet.sheet_id == sheet_id:
                return sheet
        raise ApiError(400, f"No grid with id: {sheet_id}")

    def new_sheet_id(self) -> int:
        taken = {sheet.sheet_id for sheet in self.sheets}
        while True:
            candidate = random.randint(1, 2**31 - 1)
            if candidate not in taken:
                return candidate

    def reindex(self) -> None:
        for index, sheet in enumerate(self.sheets):
            sheet.properties["index"] = index

    def cell_count(self) -> int:
        return sum(sheet.row_count * sheet.column_count for sheet in self.sheets)

    def clone(self) -> Spreadsheet:
        return Spreadsheet(
            self.spreadsheet_id,
            copy.deepcopy(self.properties),
            [sheet.clone() for sheet in self.sheets],
            copy.deepcopy(self.permissions),
            list(self.parents),
        )

    def settle(self) -> None:
        for sheet in self.sheets:
            sheet.settle()

    def to_json_text(self) -> str:
        """``to_json`` as text, re-encoding only the rows of tabs changed since the last save."""
        sheets = []
        for sheet in self.sheets:
            head = json.dumps(sheet.to_json(rows=False), ensure_ascii=False, separators=(",", ":"))
            sheets.append(head[:-1] + ',"rows":' + sheet.rows_json() + "}")
        book = json.dumps({**self.to_json(sheets=False), "sheets": []}, ensure_ascii=False, separators=(",", ":"))
        marker = '"sheets":[]'
        at = book.index(marker)
        return book[:at] + '"sheets":[' + ",".join(sheets) + "]" + book[at + len(marker) :]

    def to_json(self, sheets: bool = True) -> dict[str, Any]:
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": self.properties,
            "sheets": [sheet.to_json() for sheet in self.sheets] if sheets else [],
            "permissions": self.permissions,
            "parents": self.parents,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spreadsheet:
        return cls(
            spreadsheet_id=raw["spreadsheetId"],
            properties=raw["properties"],
            sheets=[Sheet.from_json(sheet) for sheet in raw["sheets"]],
            permissions=raw.get("permissions", []),
            parents=raw.get("parents", []),
        )

    def resource(self, ranges: Sequence[CellRange] = (), include_grid_data: bool = False) -> dict[str, Any]:
        """The API's Spreadsheet resource (only the sheets ``ranges`` touch, if any are given)."""
        sheets = [s for s in self.sheets if not ranges or any(r.sheet is s for r in ranges)]
        out_sheets = []
        for sheet in sheets:
            item: dict[str, Any] = {"properties": copy.deepcopy(sheet.properties)}
            if sheet.basic_filter is not None:
                item["basicFilter"] = copy.deepcopy(sheet.basic_filter)
            if sheet.protected_ranges:
                item["protectedRanges"] = copy.deepcopy(sheet.protected_ranges)
            item.update(copy.deepcopy({k: v for k, v in sheet.embedded.items() if k in API_EMBEDDED and v}))
            if include_grid_data:
                sheet_ranges = [r for r in ranges if r.sheet is sheet] or [CellRange(sheet, 0, None, 0, None)]
                item["data"] = [grid_data(r) for r in sheet_ranges]
            out_sheets.append(item)
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": copy.deepcopy(self.properties),
            "sheets": out_sheets,
            "spreadsheetUrl": self.url,
        }


@dataclass
class CellRange:
    sheet: Sheet
    start_row: int
    end_row: int | None  # exclusive; None: to the last row of the grid
    start_col: int
    end_col: int | None

    def bounds(self) -> tuple[int, int, int, int]:
        """(start_row, end_row, start_col, end_col) with open ends resolved to the grid size."""
        end_row = self.end_row if self.end_row is not None else max(self.sheet.row_count, self.start_row + 1)
        end_col = self.end_col if self.end_col is not None else max(self.sheet.column_count, self.start_col + 1)
        return self.start_row, end_row, self.start_col, end_col

    def is_single_cell(self) -> bool:
        return (self.end_row, self.end_col) == (self.start_row + 1, self.start_col + 1)

    def a1(self) -> str:
        """The range as the API echoes it: open ends clamped to the grid, title quoted if needed."""
        r0, r1, c0, c1 = self.bounds()
        cells = f"{column_letters(c0)}{r0 + 1}"
        if (r1 - r0, c1 - c0) != (1, 1):
            cells += f":{column_letters(c1 - 1)}{r1}"
        return f"{quote_title(self.sheet.title)}!{cells}"

    def check_in_grid(self) -> None:
        if self.start_row >= self.sheet.row_count or self.start_col >= self.sheet.column_count:
            raise ApiError(
                400,
                f"Range ({self.a1()}) exceeds grid limits. Max rows: {self.sheet.row_count}, "
                f"max columns: {self.sheet.column_count}",
            )


def parse_range(book: Spreadsheet, text: str) -> CellRange:
    title, cells = split_title(text)
    if title is None:
        # Without '!', a tab's name wins over A1 notation, as in the real API.
        sheet = book.sheet_by_title(text)
        if sheet is not None:
            return CellRange(sheet, 0, None, 0, None)
        sheet, cells = book.sheets[0], text
    else:
        found = book.sheet_by_title(title)
        if found is None:
            raise ApiError(400, f"Unable to parse range: {text}")
        sheet = found
        if cells is None:
            return CellRange(sheet, 0, None, 0, None)
    bounds = parse_cells(cells or "")
    if bounds is None:
        raise ApiError(400, f"Unable to parse range: {text}")
    return CellRange(sheet, *bounds)


def grid_range(book: Spreadsheet, raw: Any) -> CellRange:
    """A GridRange object (``sheetId`` defaults to 0, as proto3 does) -> CellRange."""
    if not isinstance(raw, dict):
        raise ApiError(400, "range must be a GridRange object")
    sheet = book.sheet_by_id(raw.get("sheetId", 0))
    bounds = [raw.get(key) for key in ("startRowIndex", "endRowIndex", "startColumnIndex", "endColumnIndex")]
    if any(v is not None and (not isinstance(v, int) or v < 0) for v in bounds):
        raise ApiError(400, "GridRange indexes must be non-negative integers")
    start_row, end_row, start_col, end_col = bounds
    start_row, start_col = start_row or 0, start_col or 0
    if (end_row is not None and end_row < start_row) or (end_col is not None and end_col < start_col):
        raise ApiError(400, "GridRange end index must not be less than its start index")
    return CellRange(sheet, start_row, end_row, start_col, end_col)


def grid_range_json(rng: CellRange) -> dict[str, Any]:
    out: dict[str, Any] = {"sheetId": rng.sheet.sheet_id, "startRowIndex": rng.start_row}
    if rng.end_row is not None:
        out["endRowIndex"] = rng.end_row
    out["startColumnIndex"] = rng.start_col
    if rng.end_col is not None:
        out["endColumnIndex"] = rng.end_col
    return out


def dimension_range(book: Spreadsheet, raw: Any) -> tuple[Sheet, str, int, int]:
    """A DimensionRange -> (sheet, "ROWS" | "COLUMNS", start, end clamped to the grid)."""
    if not isinstance(raw, dict):
        raise ApiError(400, "range must be a DimensionRange object")
    sheet = book.sheet_by_id(raw.get("sheetId", 0))
    dimension = raw.get("dimension")
    if dimension not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"dimension must be ROWS or COLUMNS, got {dimension!r}")
    size = sheet.row_count if dimension == "ROWS" else sheet.column_count
    start, end = raw.get("startIndex", 0), min(raw.get("endIndex", size), size)
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end:
        raise ApiError(400, f"Invalid dimension range: startIndex {start}, endIndex {end} (grid size {size})")
    return sheet, dimension, start, end


def raw_cells(rng: CellRange, major: str = "ROWS") -> list[list[Cell]]:
    """The stored cells of ``rng``, trailing empty cells and rows trimmed like the API does."""
    rows = [trim(cells[rng.start_col : rng.end_col]) for cells in rng.sheet.rows[rng.start_row : rng.end_row]]
    if major == "COLUMNS":
        rows = [trim(cells) for cells in transpose(rows)]
    return trim_rows(rows)


def grid_data(rng: CellRange) -> dict[str, Any]:
    def cell_data(value: Cell) -> dict[str, Any]:
        if value is None:
            return {}
        return {
            "userEnteredValue": extended_value(value),
            "formattedValue": formatted(value),
        }

    return {
        "startRow": rng.start_row,
        "startColumn": rng.start_col,
        "rowData": [{"values": [cell_data(v) for v in cells]} for cells in raw_cells(rng)],
    }
