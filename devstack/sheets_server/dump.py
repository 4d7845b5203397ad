"""The dump CLI: every stored spreadsheet's tabs as plain-text tables or CSV."""

from __future__ import annotations

import argparse
import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

from devstack.sheets_server.a1 import column_letters
from devstack.sheets_server.cells import formatted
from devstack.sheets_server.embedded import refresh_pivots
from devstack.sheets_server.model import CellRange, Sheet, raw_cells
from devstack.sheets_server.persistence import load_spreadsheets

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
        refresh_pivots(book, datetime.now(UTC))  # the stored outputs may predate the last write
        if args.out is None:
            print(f"=== {book.properties.get('title', '')} ({book.spreadsheet_id}) ===")
        for sheet in book.sheets:
            rows = [[formatted(value) for value in cells] for cells in raw_cells(CellRange(sheet, 0, None, 0, None))]
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
