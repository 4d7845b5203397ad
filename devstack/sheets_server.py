"""Google Sheets API v4 (+ Drive v3 permissions) stand-in, reached through googleapiclient.

Build the clients with ``client_options={"api_endpoint": "http://127.0.0.1:PORT/"}`` and
``AnonymousCredentials()``. googleapiclient then calls (paths still percent-encoded)::

    POST /v4/spreadsheets                                   spreadsheets.create
    GET  /v4/spreadsheets/{id}?ranges=..&includeGridData=.. spreadsheets.get
    POST /v4/spreadsheets/{id}:batchUpdate                  spreadsheets.batchUpdate
    GET  /v4/spreadsheets/{id}/values/{range}               values.get
    PUT  /v4/spreadsheets/{id}/values/{range}               values.update
    POST /v4/spreadsheets/{id}/values/{range}:append        values.append
    POST /v4/spreadsheets/{id}/values/{range}:clear         values.clear
    GET  /v4/spreadsheets/{id}/values:batchGet?ranges=..    values.batchGet
    POST /v4/spreadsheets/{id}/values:batchUpdate           values.batchUpdate
    POST /v4/spreadsheets/{id}/values:batchClear            values.batchClear
    POST /files/{id}/permissions                            drive permissions.create

Drive's discovery document puts "drive/v3/" in its service path, which an api_endpoint override
replaces, so the Drive calls arrive without it; ``/drive/v3/files/...`` is accepted as well.

Every spreadsheet is stored as ``<spreadsheetId>.json`` in ``--data-dir`` (written atomically) and
loaded again on start. Formulas are stored, never evaluated: reads return the formula text.

    python -m devstack.sheets_server --port 8091 --data-dir .local/sheets
    python -m devstack.sheets_server dump --data-dir .local/sheets [--format table|csv] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import os
import random
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from devstack._http import ApiError, Fault, Reply, Request, Route, Setting, StandInServer, route, run_main

DEFAULT_ROW_COUNT = 1000
DEFAULT_COLUMN_COUNT = 26
CELL_LIMIT = 10_000_000

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    429: (
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' "
        "of service 'sheets.googleapis.com' for consumer 'project_number:0'."
    ),
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}


@dataclass(frozen=True)
class Formula:
    """A USER_ENTERED '=...' string: kept apart from text so RAW '=...' strings stay plain text."""

    text: str


type Cell = bool | int | float | str | Formula | None


class _Skip:
    """A null in ``values``: the API leaves that cell unchanged (an empty string clears it)."""


SKIP = _Skip()


# -- A1 notation --------------------------------------------------------------------------------


def column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def column_index(letters: str) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number - 1


_REF = re.compile(r"\$?([A-Za-z]{1,3})?\$?([1-9]\d*)?")
_PLAIN_TITLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELL_LIKE = re.compile(r"[A-Za-z]{1,3}\d+")


def quote_title(title: str) -> str:
    if _PLAIN_TITLE.fullmatch(title) and not _CELL_LIKE.fullmatch(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def _split_title(text: str) -> tuple[str | None, str | None]:
    """``'Tab name'!A1:B`` -> ("Tab name", "A1:B"); ``'Tab'`` -> ("Tab", None); ``A1`` -> (None, "A1")."""
    if text.startswith("'"):
        name: list[str] = []
        i = 1
        while i < len(text):
            if text[i] != "'":
                name.append(text[i])
                i += 1
            elif text[i + 1 : i + 2] == "'":  # '' is an escaped quote inside a quoted title
                name.append("'")
                i += 2
            else:
                rest = text[i + 1 :]
                if not rest:
                    return "".join(name), None
                if rest.startswith("!"):
                    return "".join(name), rest[1:]
                break
        raise ApiError(400, f"Unable to parse range: {text}")
    title, bang, cells = text.rpartition("!")
    return (title, cells) if bang else (None, text)


def _parse_cells(text: str) -> tuple[int, int | None, int, int | None] | None:
    """A1 cells part -> (start_row, end_row, start_col, end_col), 0-based, ends exclusive, None = open."""
    parts = text.split(":")
    if len(parts) > 2:
        return None
    refs: list[tuple[int | None, int | None]] = []
    for part in parts:
        match = _REF.fullmatch(part)
        if not part or match is None or (match[1] is None and match[2] is None):
            return None
        refs.append((column_index(match[1]) if match[1] else None, int(match[2]) if match[2] else None))
    if len(refs) == 1:
        col, row = refs[0]
        return (
            row - 1 if row else 0,
            row,
            col if col is not None else 0,
            col + 1 if col is not None else None,
        )
    (col1, row1), (col2, row2) = refs
    start_row, end_row = (row1 - 1 if row1 else 0), row2
    start_col, end_col = (col1 if col1 is not None else 0), (col2 + 1 if col2 is not None else None)
    # Reversed corners (B2:A1) name the same rectangle, as in the UI.
    if end_row is not None and end_row <= start_row:
        start_row, end_row = end_row - 1, start_row + 1
    if end_col is not None and end_col <= start_col:
        start_col, end_col = end_col - 1, start_col + 1
    return start_row, end_row, start_col, end_col


# -- the model ----------------------------------------------------------------------------------


@dataclass
class Sheet:
    properties: dict[str, Any]
    rows: list[list[Cell]] = field(default_factory=list)  # trailing empty cells/rows trimmed
    formats: list[dict[str, Any]] = field(default_factory=list)  # repeatCell formats, in order
    basic_filter: dict[str, Any] | None = None
    dimension_changes: list[dict[str, Any]] = field(default_factory=list)  # resize/size requests

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
        cells = self.rows[row]
        if len(cells) <= col:
            cells.extend([None] * (col + 1 - len(cells)))
        cells[col] = value

    def compact(self) -> None:
        for cells in self.rows:
            _trim(cells)
        _trim_rows(self.rows)

    def clone(self) -> Sheet:
        return Sheet(
            copy.deepcopy(self.properties),
            [cells[:] for cells in self.rows],  # cells are immutable, so a shallow copy per row is enough
            copy.deepcopy(self.formats),
            copy.deepcopy(self.basic_filter),
            copy.deepcopy(self.dimension_changes),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "properties": self.properties,
            "rows": [[_cell_to_json(value) for value in cells] for cells in self.rows],
            "formats": self.formats,
            "basicFilter": self.basic_filter,
            "dimensionChanges": self.dimension_changes,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Sheet:
        return cls(
            properties=raw["properties"],
            rows=[[_cell_from_json(value) for value in cells] for cells in raw.get("rows", [])],
            formats=raw.get("formats", []),
            basic_filter=raw.get("basicFilter"),
            dimension_changes=raw.get("dimensionChanges", []),
        )


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    properties: dict[str, Any]
    sheets: list[Sheet] = field(default_factory=list)
    permissions: list[dict[str, Any]] = field(default_factory=list)

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
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": self.properties,
            "sheets": [sheet.to_json() for sheet in self.sheets],
            "permissions": self.permissions,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Spreadsheet:
        return cls(
            spreadsheet_id=raw["spreadsheetId"],
            properties=raw["properties"],
            sheets=[Sheet.from_json(sheet) for sheet in raw["sheets"]],
            permissions=raw.get("permissions", []),
        )

    def resource(self, ranges: Sequence[CellRange] = (), include_grid_data: bool = False) -> dict[str, Any]:
        """The API's Spreadsheet resource (only the sheets ``ranges`` touch, if any are given)."""
        sheets = [s for s in self.sheets if not ranges or any(r.sheet is s for r in ranges)]
        out_sheets = []
        for sheet in sheets:
            item: dict[str, Any] = {"properties": copy.deepcopy(sheet.properties)}
            if sheet.basic_filter is not None:
                item["basicFilter"] = copy.deepcopy(sheet.basic_filter)
            if include_grid_data:
                sheet_ranges = [r for r in ranges if r.sheet is sheet] or [CellRange(sheet, 0, None, 0, None)]
                item["data"] = [_grid_data(r) for r in sheet_ranges]
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
    title, cells = _split_title(text)
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
    bounds = _parse_cells(cells or "")
    if bounds is None:
        raise ApiError(400, f"Unable to parse range: {text}")
    return CellRange(sheet, *bounds)


def _grid_range(book: Spreadsheet, raw: Any) -> CellRange:
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


def _grid_range_json(rng: CellRange) -> dict[str, Any]:
    out: dict[str, Any] = {"sheetId": rng.sheet.sheet_id, "startRowIndex": rng.start_row}
    if rng.end_row is not None:
        out["endRowIndex"] = rng.end_row
    out["startColumnIndex"] = rng.start_col
    if rng.end_col is not None:
        out["endColumnIndex"] = rng.end_col
    return out


def _dimension_range(book: Spreadsheet, raw: Any) -> tuple[Sheet, str, int, int]:
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


# -- cells: input, rendering, storage ----------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _normalise_number(value: float) -> int | float:
    # Sheets stores doubles and answers 2, not 2.0, for whole numbers.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _raw_input(value: Any) -> Cell | _Skip:
    if value is None:
        return SKIP
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _normalise_number(value)
    if isinstance(value, str):
        return value or None
    raise ValueError(f"{type(value).__name__}_value {json.dumps(value)}")


def _user_entered_input(value: Any) -> Cell | _Skip:
    """Parse a string the way typing it into the UI would (numbers, booleans, formulas)."""
    if not isinstance(value, str):
        return _raw_input(value)
    if value.startswith("="):
        return Formula(value)
    if value.startswith("'"):  # a leading apostrophe forces text, as in the UI
        return value[1:] or None
    stripped = value.strip()
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    if _NUMBER.fullmatch(stripped):
        return _normalise_number(float(stripped))
    if stripped.upper() in ("TRUE", "FALSE"):
        return stripped.upper() == "TRUE"
    return value or None


_INPUT_OPTIONS: dict[str, Callable[[Any], Cell | _Skip]] = {
    "RAW": _raw_input,
    "USER_ENTERED": _user_entered_input,
}


def _formatted(value: Cell) -> Any:
    if value is None:
        return ""
    if isinstance(value, Formula):
        return value.text
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


def _unformatted(value: Cell) -> Any:
    if value is None:
        return ""
    return value.text if isinstance(value, Formula) else value


_RENDERERS: dict[str, Callable[[Cell], Any]] = {
    "FORMATTED_VALUE": _formatted,
    "UNFORMATTED_VALUE": _unformatted,
    "FORMULA": _unformatted,  # formulas are never evaluated, so both show the formula text
}


def _renderer(request: Request, name: str = "valueRenderOption") -> Callable[[Cell], Any]:
    option = request.param(name) or "FORMATTED_VALUE"
    if option not in _RENDERERS:
        raise ApiError(400, f"Invalid value at '{name}' ({option}); expected one of {sorted(_RENDERERS)}")
    return _RENDERERS[option]


def _major_dimension(value: Any) -> str:
    major = value or "ROWS"
    if major not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"Invalid value at 'major_dimension' ({major}); expected ROWS or COLUMNS")
    return str(major)


def _cell_to_json(value: Cell) -> Any:
    return {"formula": value.text} if isinstance(value, Formula) else value


def _cell_from_json(value: Any) -> Cell:
    return Formula(value["formula"]) if isinstance(value, dict) else value


def _extended_value(value: Cell) -> dict[str, Any]:
    if isinstance(value, Formula):
        return {"formulaValue": value.text}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int | float):
        return {"numberValue": value}
    return {"stringValue": value}


def _from_extended_value(raw: Any) -> Cell:
    if not raw:
        return None
    if "formulaValue" in raw:
        return Formula(raw["formulaValue"])
    if "numberValue" in raw:
        return _normalise_number(raw["numberValue"])
    if "boolValue" in raw:
        return bool(raw["boolValue"])
    return raw.get("stringValue") or None


def _trim(cells: list[Any]) -> list[Any]:
    while cells and cells[-1] is None:
        cells.pop()
    return cells


def _trim_rows(rows: list[list[Any]]) -> list[list[Any]]:
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _transpose(rows: list[list[Any]]) -> list[list[Any]]:
    width = max((len(cells) for cells in rows), default=0)
    return [[cells[c] if c < len(cells) else None for cells in rows] for c in range(width)]


def _raw_cells(rng: CellRange, major: str = "ROWS") -> list[list[Cell]]:
    """The stored cells of ``rng``, trailing empty cells and rows trimmed like the API does."""
    rows = [_trim(cells[rng.start_col : rng.end_col]) for cells in rng.sheet.rows[rng.start_row : rng.end_row]]
    if major == "COLUMNS":
        rows = [_trim(cells) for cells in _transpose(rows)]
    return _trim_rows(rows)


def _value_range(rng: CellRange, render: Callable[[Cell], Any], major: str) -> dict[str, Any]:
    out: dict[str, Any] = {"range": rng.a1(), "majorDimension": major}
    values = [[render(value) for value in cells] for cells in _raw_cells(rng, major)]
    if values:  # the real API omits "values" for an empty range
        out["values"] = values
    return out


def _grid_data(rng: CellRange) -> dict[str, Any]:
    def cell_data(value: Cell) -> dict[str, Any]:
        if value is None:
            return {}
        return {
            "userEnteredValue": _extended_value(value),
            "formattedValue": _formatted(value),
        }

    return {
        "startRow": rng.start_row,
        "startColumn": rng.start_col,
        "rowData": [{"values": [cell_data(v) for v in cells]} for cells in _raw_cells(rng)],
    }


def _write(rng: CellRange, values: Any, major: str, convert: Callable[[Any], Cell | _Skip]) -> dict[str, Any]:
    """Write a values matrix at ``rng``'s top-left corner; returns the UpdateValuesResponse counts."""
    if not isinstance(values, list) or not all(isinstance(cells, list) for cells in values):
        raise ApiError(400, "Invalid value at 'data.values': expected a list of lists")
    matrix = values if major == "ROWS" else _transpose(values)
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
            if not isinstance(value, _Skip):
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


def _clear(rng: CellRange) -> None:
    _, end_row, start_col, end_col = rng.bounds()
    for cells in rng.sheet.rows[rng.start_row : end_row]:
        for c in range(start_col, min(end_col, len(cells))):
            cells[c] = None
    rng.sheet.compact()


# -- field masks ----------------------------------------------------------------------------


def parse_field_mask(mask: str) -> list[str]:
    """``"a(b,c.d),e"`` -> ``["a.b", "a.c.d", "e"]`` (FieldMask paths plus the parenthesised form)."""
    paths: list[str] = []
    prefixes = [""]
    token = ""
    for char in mask + ",":
        if char == "(":
            prefixes.append(prefixes[-1] + token.strip() + ".")
            token = ""
        elif char in ",)":
            if token.strip():
                paths.append(prefixes[-1] + token.strip())
            token = ""
            if char == ")":
                if len(prefixes) == 1:
                    raise ApiError(400, f"Invalid field mask: {mask}")
                prefixes.pop()
        else:
            token += char
    if len(prefixes) != 1:
        raise ApiError(400, f"Invalid field mask: {mask}")
    return paths


def _apply_field_mask(target: dict[str, Any], source: dict[str, Any], paths: list[str]) -> None:
    """Copy the masked fields of ``source`` into ``target``; a masked field absent from source is reset."""
    for path in paths:
        if path == "*":
            target.update(copy.deepcopy(source))
            continue
        *parents, leaf = path.split(".")
        src: Any = source
        dst = target
        for key in parents:
            src = src.get(key, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(key, {})
        if isinstance(src, dict) and leaf in src:
            dst[leaf] = copy.deepcopy(src[leaf])
        else:
            dst.pop(leaf, None)


def _required_fields(params: dict[str, Any]) -> list[str]:
    fields = params.get("fields")
    if not fields or not isinstance(fields, str):
        raise ApiError(400, '\'fields\' is required (e.g. "title", "gridProperties.frozenRowCount" or "*")')
    return parse_field_mask(fields)


# -- spreadsheets.batchUpdate requests ----------------------------------------------------------

type BatchRequest = Callable[[Spreadsheet, dict[str, Any]], dict[str, Any] | None]


def _add_sheet(book: Spreadsheet, params: dict[str, Any]) -> dict[str, Any]:
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


def _delete_sheet(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet = book.sheet_by_id(params.get("sheetId", 0))
    if len(book.sheets) == 1:
        raise ApiError(400, "You can't remove all the sheets in a document.")
    book.sheets.remove(sheet)
    book.reindex()


def _update_sheet_properties(book: Spreadsheet, params: dict[str, Any]) -> None:
    given = params.get("properties") or {}
    sheet = book.sheet_by_id(given.get("sheetId", 0))
    props = copy.deepcopy(sheet.properties)
    _apply_field_mask(props, given, _required_fields(params))
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
    if isinstance(new_index, int) and new_index != book.sheets.index(sheet):
        book.sheets.remove(sheet)
        book.sheets.insert(min(max(new_index, 0), len(book.sheets)), sheet)
    book.reindex()


def _repeat_cell(book: Spreadsheet, params: dict[str, Any]) -> None:
    rng = _grid_range(book, params.get("range") or {})
    cell = params.get("cell") or {}
    paths = _required_fields(params)
    if any(p == "*" or p.startswith("userEnteredFormat") for p in paths):
        rng.sheet.formats.append(
            {
                "range": _grid_range_json(rng),
                "userEnteredFormat": copy.deepcopy(cell.get("userEnteredFormat", {})),
                "fields": params["fields"],
            }
        )
    if any(p == "*" or p.startswith("userEnteredValue") for p in paths):
        value = _from_extended_value(cell.get("userEnteredValue"))
        start_row, end_row, start_col, end_col = rng.bounds()
        for row in range(start_row, end_row):
            for col in range(start_col, end_col):
                rng.sheet.set_cell(row, col, value)
        rng.sheet.compact()


def _set_basic_filter(book: Spreadsheet, params: dict[str, Any]) -> None:
    spec = copy.deepcopy(params.get("filter") or {})
    rng = _grid_range(book, spec.get("range") or {})
    spec["range"] = _grid_range_json(rng)
    rng.sheet.basic_filter = spec


def _clear_basic_filter(book: Spreadsheet, params: dict[str, Any]) -> None:
    book.sheet_by_id(params.get("sheetId", 0)).basic_filter = None


def _auto_resize_dimensions(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, *_ = _dimension_range(book, params.get("dimensions"))
    sheet.dimension_changes.append({"autoResizeDimensions": copy.deepcopy(params)})


def _update_dimension_properties(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, *_ = _dimension_range(book, params.get("range"))
    _required_fields(params)
    sheet.dimension_changes.append({"updateDimensionProperties": copy.deepcopy(params)})


def _sort_key(value: Cell) -> tuple[int, Any]:
    # Approximates the UI's order: numbers, then text (case-insensitive), then booleans.
    if isinstance(value, bool):
        return 2, value
    if isinstance(value, int | float):
        return 0, value
    text = value.text if isinstance(value, Formula) else str(value)
    return 1, text.casefold()


def _sort_range(book: Spreadsheet, params: dict[str, Any]) -> None:
    rng = _grid_range(book, params.get("range") or {})
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


def _delete_dimension(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet, dimension, start, end = _dimension_range(book, params.get("range"))
    if dimension == "ROWS":
        if start == 0 and end >= sheet.row_count:
            raise ApiError(400, "You can't delete all the rows on the sheet.")
        del sheet.rows[start:end]
        sheet.grid["rowCount"] = sheet.row_count - (end - start)
    else:
        if start == 0 and end >= sheet.column_count:
            raise ApiError(400, "You can't delete all the columns on the sheet.")
        for cells in sheet.rows:
            del cells[start:end]
        sheet.grid["columnCount"] = sheet.column_count - (end - start)
    sheet.compact()


def _append_dimension(book: Spreadsheet, params: dict[str, Any]) -> None:
    sheet = book.sheet_by_id(params.get("sheetId", 0))
    dimension, length = params.get("dimension"), params.get("length")
    if dimension not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"dimension must be ROWS or COLUMNS, got {dimension!r}")
    if not isinstance(length, int) or length < 1:
        raise ApiError(400, "length must be a positive integer")
    key = "rowCount" if dimension == "ROWS" else "columnCount"
    sheet.grid[key] = (sheet.row_count if dimension == "ROWS" else sheet.column_count) + length


BATCH_REQUESTS: dict[str, BatchRequest] = {
    "addSheet": _add_sheet,
    "deleteSheet": _delete_sheet,
    "updateSheetProperties": _update_sheet_properties,
    "repeatCell": _repeat_cell,
    "setBasicFilter": _set_basic_filter,
    "clearBasicFilter": _clear_basic_filter,
    "autoResizeDimensions": _auto_resize_dimensions,
    "updateDimensionProperties": _update_dimension_properties,
    "sortRange": _sort_range,
    "deleteDimension": _delete_dimension,
    "appendDimension": _append_dimension,
}

_PERMISSION_ROLES = {"owner", "organizer", "fileOrganizer", "writer", "commenter", "reader"}
_PERMISSION_TYPES = {"user", "group", "domain", "anyone"}


# -- persistence ------------------------------------------------------------------------------


def load_spreadsheets(data_dir: Path) -> list[Spreadsheet]:
    books = []
    for path in sorted(data_dir.glob("*.json")):
        try:
            books.append(Spreadsheet.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"sheets stand-in: skipping {path}: {exc!r}", file=sys.stderr)
    return books


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    # Another process (the dump CLI, a test) may read the file at any moment: never let it see half.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users' tools
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, ensure_ascii=False, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


# -- the server -------------------------------------------------------------------------------


class SheetsServer(StandInServer):
    service_name = "sheets"
    settings_spec: ClassVar[dict[str, Setting]] = {
        **StandInServer.settings_spec,
        "cell_limit": Setting(CELL_LIMIT, _positive_int),
    }

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        *,
        quiet: bool = True,
    ) -> None:
        self._books: dict[str, Spreadsheet] = {}
        # One writer at a time; readers need no lock because a write swaps in a new Spreadsheet.
        self._lock = threading.Lock()
        super().__init__(host, port, data_dir, quiet=quiet)
        if self.data_dir is not None:
            self._books = {book.spreadsheet_id: book for book in load_spreadsheets(self.data_dir)}

    def api_routes(self) -> list[Route]:
        sheets = r"/v4/spreadsheets"
        sid = r"([^/:]+)"
        return [
            route("POST", sheets, self._create),
            route("GET", rf"{sheets}/{sid}", self._get),
            route("POST", rf"{sheets}/{sid}:batchUpdate", self._batch_update),
            route("GET", rf"{sheets}/{sid}/values:batchGet", self._values_batch_get),
            route("POST", rf"{sheets}/{sid}/values:batchUpdate", self._values_batch_update),
            route("POST", rf"{sheets}/{sid}/values:batchClear", self._values_batch_clear),
            route("POST", rf"{sheets}/{sid}/values/([^/]+):append", self._values_append),
            route("POST", rf"{sheets}/{sid}/values/([^/]+):clear", self._values_clear),
            route("GET", rf"{sheets}/{sid}/values/([^/]+)", self._values_get),
            route("PUT", rf"{sheets}/{sid}/values/([^/]+)", self._values_update),
            route("POST", r"(?:/drive/v3)?/files/([^/]+)/permissions", self._create_permission),
            route("GET", r"(?:/drive/v3)?/files/([^/]+)/permissions", self._list_permissions),
        ]

    def extra_control_routes(self) -> list[Route]:
        return [
            route("GET", r"/_control/spreadsheets", self._control_list),
            route("GET", r"/_control/spreadsheets/([^/]+)", self._control_state),
        ]

    def render_error(self, error: ApiError) -> Any:
        status = error.code if isinstance(error.code, str) else _GOOGLE_STATUS.get(error.status, "UNKNOWN")
        return {"error": {"code": error.status, "message": error.message, "status": status, **error.extra}}

    def fault_error(self, fault: Fault) -> ApiError:
        assert fault.status is not None
        message = fault.message or _FAULT_MESSAGES.get(fault.status, f"Injected fault (HTTP {fault.status})")
        return ApiError(fault.status, message, fault.error_code if isinstance(fault.error_code, str) else None)

    def reset_state(self) -> None:
        with self._lock:
            if self.data_dir is not None:
                for spreadsheet_id in self._books:
                    self._path(spreadsheet_id).unlink(missing_ok=True)
            self._books = {}

    def spreadsheet(self, spreadsheet_id: str) -> Spreadsheet:
        """The current state of a spreadsheet (for tests running the server in-process)."""
        return self._book(spreadsheet_id)

    # -- storage ---------------------------------------------------------------------------------

    def _path(self, spreadsheet_id: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"{spreadsheet_id}.json"

    def _book(self, spreadsheet_id: str) -> Spreadsheet:
        book = self._books.get(unquote(spreadsheet_id))
        if book is None:
            raise ApiError(404, "Requested entity was not found.")
        return book

    @contextmanager
    def _mutate(self, spreadsheet_id: str) -> Iterator[Spreadsheet]:
        """Edit a copy and swap it in only if the block succeeds: batch requests are all-or-nothing."""
        with self._lock:
            book = self._book(spreadsheet_id).clone()
            yield book
            self._commit(book)

    def _commit(self, book: Spreadsheet) -> None:
        limit = self.settings["cell_limit"]
        if book.cell_count() > limit:
            raise ApiError(
                400,
                f"This action would increase the number of cells in the workbook above the limit of {limit} cells.",
            )
        self._books[book.spreadsheet_id] = book
        if self.data_dir is not None:
            _write_atomically(self._path(book.spreadsheet_id), book.to_json())

    # -- spreadsheets ----------------------------------------------------------------------------

    def _create(self, request: Request) -> dict[str, Any]:
        body = request.json_object()
        properties = {
            "title": "Untitled spreadsheet",
            "locale": "en_US",
            "autoRecalc": "ON_CHANGE",
            "timeZone": "Etc/GMT",
            **(body.get("properties") or {}),
        }
        book = Spreadsheet(secrets.token_urlsafe(33), properties)
        for spec in body.get("sheets") or [{}]:
            _add_sheet(book, {"properties": spec.get("properties") or {}})
        with self._lock:
            self._commit(book)
        return book.resource()

    def _get(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        book = self._book(spreadsheet_id)
        ranges = [parse_range(book, text) for text in request.params("ranges")]
        return book.resource(ranges, include_grid_data=request.param("includeGridData") == "true")

    def _batch_update(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        body = request.json_object()
        items = body.get("requests") or []
        if not items:
            raise ApiError(400, "Must specify at least one request.")
        replies: list[dict[str, Any]] = []
        with self._mutate(spreadsheet_id) as book:
            for index, item in enumerate(items):
                if not isinstance(item, dict) or len(item) != 1:
                    raise ApiError(400, f"Invalid requests[{index}]: each request must set exactly one kind")
                ((kind, params),) = item.items()
                if not isinstance(params, dict):
                    raise ApiError(400, f"Invalid requests[{index}].{kind}: expected a JSON object")
                handler = BATCH_REQUESTS.get(kind)
                if handler is None:
                    raise ApiError(
                        400,
                        f"Invalid JSON payload received. Unknown name \"{kind}\" at 'requests[{index}]' "
                        f"(the stand-in implements: {', '.join(BATCH_REQUESTS)})",
                    )
                try:
                    replies.append(handler(book, params) or {})
                except ApiError as error:
                    raise ApiError(error.status, f"Invalid requests[{index}].{kind}: {error.message}") from None
        response: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id, "replies": replies}
        if body.get("includeSpreadsheetInResponse"):
            response["updatedSpreadsheet"] = book.resource()
        return response

    # -- values ----------------------------------------------------------------------------------

    def _values_get(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        rng = parse_range(self._book(spreadsheet_id), unquote(raw_range))
        rng.check_in_grid()
        return _value_range(rng, _renderer(request), _major_dimension(request.param("majorDimension")))

    def _values_batch_get(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        book = self._book(spreadsheet_id)
        render, major = _renderer(request), _major_dimension(request.param("majorDimension"))
        value_ranges = []
        for text in request.params("ranges"):
            rng = parse_range(book, text)
            rng.check_in_grid()
            value_ranges.append(_value_range(rng, render, major))
        return {"spreadsheetId": book.spreadsheet_id, "valueRanges": value_ranges}

    def _input_converter(self, option: str | None) -> Callable[[Any], Cell | _Skip]:
        if option is None:
            raise ApiError(400, "'valueInputOption' is required but not specified")
        if option not in _INPUT_OPTIONS:
            raise ApiError(400, f"Invalid valueInputOption: {option}")
        return _INPUT_OPTIONS[option]

    def _update_one(
        self,
        book: Spreadsheet,
        rng: CellRange,
        value_range: dict[str, Any],
        convert: Callable[[Any], Cell | _Skip],
        response_render: Callable[[Cell], Any] | None,
    ) -> dict[str, Any]:
        """Write one ValueRange; ``response_render`` set means includeValuesInResponse."""
        major = _major_dimension(value_range.get("majorDimension"))
        result = {
            "spreadsheetId": book.spreadsheet_id,
            **_write(rng, value_range.get("values") or [], major, convert),
        }
        if response_render is not None and "updatedRows" in result:
            written = parse_range(book, result["updatedRange"])
            result["updatedData"] = _value_range(written, response_render, "ROWS")
        return result

    def _response_render(self, request: Request, include: Any) -> Callable[[Cell], Any] | None:
        return _renderer(request, "responseValueRenderOption") if include in (True, "true") else None

    def _values_update(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        body = request.json_object()
        convert = self._input_converter(request.param("valueInputOption"))
        render = self._response_render(request, request.param("includeValuesInResponse"))
        with self._mutate(spreadsheet_id) as book:
            return self._update_one(book, parse_range(book, unquote(raw_range)), body, convert, render)

    def _values_batch_update(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        body = request.json_object()
        convert = self._input_converter(body.get("valueInputOption"))
        render = self._response_render(request, body.get("includeValuesInResponse"))
        responses = []
        with self._mutate(spreadsheet_id) as book:
            for value_range in body.get("data") or []:
                rng = parse_range(book, str(value_range.get("range", "")))
                responses.append(self._update_one(book, rng, value_range, convert, render))
        written = [r for r in responses if "updatedRows" in r]
        return {
            "spreadsheetId": book.spreadsheet_id,
            "totalUpdatedRows": sum(r["updatedRows"] for r in written),
            "totalUpdatedColumns": sum(r["updatedColumns"] for r in written),
            "totalUpdatedCells": sum(r["updatedCells"] for r in written),
            "totalUpdatedSheets": len({r["updatedRange"].rpartition("!")[0] for r in written}),
            "responses": responses,
        }

    def _values_append(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        body = request.json_object()
        convert = self._input_converter(request.param("valueInputOption"))
        insert_rows = (request.param("insertDataOption") or "OVERWRITE") == "INSERT_ROWS"
        values = body.get("values") or []
        major = _major_dimension(body.get("majorDimension"))
        with self._mutate(spreadsheet_id) as book:
            rng = parse_range(book, unquote(raw_range))
            if rng.is_single_cell():  # as for writes, a single cell only anchors the search
                rng = CellRange(rng.sheet, rng.start_row, None, rng.start_col, None)
            sheet = rng.sheet
            # The "table" is the data at or below the range's first row, within its columns;
            # new rows go right after its last non-empty row.
            last = rng.start_row - 1
            for r in range(rng.start_row, len(sheet.rows)):
                if any(v is not None for v in sheet.rows[r][rng.start_col : rng.end_col]):
                    last = r
            response: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
            if last >= rng.start_row:
                width = max(
                    len(_trim(sheet.rows[r][rng.start_col : rng.end_col])) for r in range(rng.start_row, last + 1)
                )
                table = CellRange(sheet, rng.start_row, last + 1, rng.start_col, rng.start_col + max(width, 1))
                response["tableRange"] = table.a1()
            target = CellRange(sheet, last + 1, None, rng.start_col, None)
            height = len(values) if major == "ROWS" else max((len(col) for col in values), default=0)
            if insert_rows and height:
                # INSERT_ROWS pushes whatever lies below the table down instead of overwriting it.
                if last + 1 < len(sheet.rows):
                    sheet.rows[last + 1 : last + 1] = [[] for _ in range(height)]
                sheet.grid["rowCount"] = sheet.row_count + height
            response["updates"] = {
                "spreadsheetId": book.spreadsheet_id,
                **_write(target, values, major, convert),
            }
        return response

    def _values_clear(self, request: Request, spreadsheet_id: str, raw_range: str) -> dict[str, Any]:
        with self._mutate(spreadsheet_id) as book:
            rng = parse_range(book, unquote(raw_range))
            _clear(rng)
        return {"spreadsheetId": book.spreadsheet_id, "clearedRange": rng.a1()}

    def _values_batch_clear(self, request: Request, spreadsheet_id: str) -> dict[str, Any]:
        texts = request.json_object().get("ranges") or []
        with self._mutate(spreadsheet_id) as book:
            ranges = [parse_range(book, str(text)) for text in texts]
            for rng in ranges:
                _clear(rng)
        return {"spreadsheetId": book.spreadsheet_id, "clearedRanges": [rng.a1() for rng in ranges]}

    # -- drive -----------------------------------------------------------------------------------

    def _drive_file(self, file_id: str) -> str:
        file_id = unquote(file_id)
        if file_id not in self._books:
            message = f"File not found: {file_id}."
            errors = [
                {
                    "message": message,
                    "domain": "global",
                    "reason": "notFound",
                    "location": "fileId",
                    "locationType": "parameter",
                }
            ]
            raise ApiError(404, message, extra={"errors": errors})
        return file_id

    def _create_permission(self, request: Request, file_id: str) -> dict[str, Any]:
        body = request.json_object()
        role, kind = body.get("role"), body.get("type")
        if role not in _PERMISSION_ROLES:
            raise ApiError(400, f"The provided role is invalid: {role!r}")
        if kind not in _PERMISSION_TYPES:
            raise ApiError(400, f"The provided permission type is invalid: {kind!r}")
        if kind in ("user", "group") and not body.get("emailAddress"):
            raise ApiError(400, "The permission type 'user' or 'group' requires an emailAddress.")
        permission = {
            "kind": "drive#permission",
            "id": str(random.randint(10**19, 10**20 - 1)),
            "type": kind,
            "role": role,
            **{key: body[key] for key in ("emailAddress", "domain") if body.get(key)},
        }
        with self._mutate(self._drive_file(file_id)) as book:
            book.permissions.append(permission)
        return permission

    def _list_permissions(self, _request: Request, file_id: str) -> dict[str, Any]:
        book = self._book(self._drive_file(file_id))
        return {"kind": "drive#permissionList", "permissions": copy.deepcopy(book.permissions)}

    # -- control extras ----------------------------------------------------------------------------

    def _control_list(self, _request: Request) -> list[dict[str, Any]]:
        return [
            {
                "spreadsheetId": b.spreadsheet_id,
                "title": b.properties.get("title"),
                "sheets": [s.title for s in b.sheets],
            }
            for b in list(self._books.values())
        ]

    def _control_state(self, _request: Request, spreadsheet_id: str) -> Reply:
        book = self._books.get(unquote(spreadsheet_id))
        if book is None:
            return Reply(404, {"ok": False, "error": f"no spreadsheet {spreadsheet_id}"})
        return Reply(200, book.to_json())


# -- the dump CLI ---------------------------------------------------------------------------------

_MAX_CELL_WIDTH = 40


def _table_text(rows: list[list[str]]) -> str:
    width = max((len(cells) for cells in rows), default=0)
    if not width:
        return "(empty)\n"
    clipped = [[v if len(v) <= _MAX_CELL_WIDTH else v[: _MAX_CELL_WIDTH - 3] + "..." for v in cells] for cells in rows]
    header = [column_letters(c) for c in range(width)]
    widths = [max([len(header[c])] + [len(cells[c]) for cells in clipped if c < len(cells)]) for c in range(width)]
    number_width = len(str(len(rows)))

    def line(label: str, cells: list[str]) -> str:
        padded = [(cells[c] if c < len(cells) else "").ljust(widths[c]) for c in range(width)]
        return f"{label.rjust(number_width)} | " + " | ".join(padded).rstrip()

    return "\n".join([line("", header), *(line(str(i + 1), cells) for i, cells in enumerate(clipped))]) + "\n"


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "untitled"


def _sheet_summary(sheet: Sheet, rows: list[list[str]]) -> str:
    notes = [f"{len(rows)} rows x {max((len(c) for c in rows), default=0)} columns"]
    if sheet.grid.get("frozenRowCount"):
        notes.append(f"frozen rows: {sheet.grid['frozenRowCount']}")
    if sheet.basic_filter:
        notes.append("basic filter")
    if sheet.formats:
        notes.append(f"{len(sheet.formats)} formats")
    return ", ".join(notes)


def dump_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.sheets_server dump",
        description="Show every stored spreadsheet's tabs as plain-text tables or CSV.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the server's --data-dir")
    parser.add_argument("--format", choices=["table", "csv"], default="table")
    parser.add_argument("--out", type=Path, help="write one file per tab under this folder instead of printing")
    args = parser.parse_args(argv)
    books = load_spreadsheets(args.data_dir) if args.data_dir.is_dir() else []
    if not books:
        print(f"no spreadsheets in {args.data_dir}")
        return 0
    render = _csv_text if args.format == "csv" else _table_text
    for book in books:
        if args.out is None:
            print(f"=== {book.properties.get('title', '')} ({book.spreadsheet_id}) ===")
        for sheet in book.sheets:
            rows = [[_formatted(value) for value in cells] for cells in _raw_cells(CellRange(sheet, 0, None, 0, None))]
            if args.out is None:
                print(f"--- {sheet.title}: {_sheet_summary(sheet, rows)} ---")
                print(render(rows))
                continue
            folder = args.out / f"{_safe_name(str(book.properties.get('title', '')))}-{book.spreadsheet_id[:8]}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{_safe_name(sheet.title)}.{'csv' if args.format == 'csv' else 'txt'}"
            path.write_text(render(rows), encoding="utf-8")
            print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(SheetsServer, argv, {"dump": dump_command}, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
