"""Write report frames to Google Sheets: upsert by key, a bounded number of API calls per run.

The upsert of one report reads the spreadsheet's tabs and the key column of its report tabs
(2 reads), then writes: new tabs if any (1), every changed and new row in one
``values.batchUpdate`` (1, split only if the payload passes ~2 MB), and one ``batchUpdate``
that sorts, freezes, bolds, filters, formats and sizes the tabs (1). So the call count does not
grow with the number of rows. Rows of keys this run did not touch are left as they are; a key's
row is overwritten in place; the server-side sort then puts every row where the on-time runs
would have, which makes reruns and backfills in any order converge.

Values are written RAW: text is never parsed as a formula (a name like ``=HYPERLINK(..)``
stays text), numbers stay numbers, and datetimes go as Sheets serial numbers in IST wall time
with a ``yyyy-mm-dd hh:mm`` format, so the sales team can sort and filter them.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from leadflow.config import REPORT_TIMEZONE
from leadflow.reports.sheet_layout import layout_requests
from leadflow.reports.sheets_api import SheetsClient, Tab, column_letter, list_tabs, new_tab_properties, quote_tab

log = logging.getLogger(__name__)

SHEETS_EPOCH = pd.Timestamp("1899-12-30")
MAX_PAYLOAD_BYTES = 1_800_000  # below the ~2 MB Sheets recommends per request
MAX_PLANS = 3


@dataclass(frozen=True)
class ReportSpec:
    """How one report maps onto a spreadsheet."""

    title: str
    key: str
    columns: list[str]
    datetime_columns: frozenset[str]
    # (column, ascending) pairs; the key is appended as the last tie-breaker.
    sort_by: list[tuple[str, bool]]
    tab_of: Callable[[pd.DataFrame], pd.Series]
    is_report_tab: Callable[[str], bool]
    version_column: str = "Updated"  # when the row's data was read; never replaced by older data


@dataclass
class UpsertResult:
    spreadsheet_id: str
    rows_updated: int = 0
    rows_added: int = 0
    rows_moved: int = 0
    rows_kept_newer: int = 0  # rows the sheet already holds from a later read
    replans: int = 0  # times rows moved under us (a sort, an inserted row) and the write was re-planned
    tabs_added: list[str] = field(default_factory=list)
    reads: int = 0
    writes: int = 0
    request_bytes: int = 0
    # Title -> sheet id after the write (for the dashboard; not part of the run summary).
    tab_ids: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tab_ids"}


def to_serial(value: datetime | pd.Timestamp) -> float:
    """A Sheets serial number (days since 1899-12-30) of the IST wall time of ``value``."""
    local = pd.Timestamp(value).tz_convert(REPORT_TIMEZONE).tz_localize(None)
    return (local - SHEETS_EPOCH) / pd.Timedelta(days=1)


def cell(value: Any, is_datetime: bool = False) -> str | int | float | bool:
    """A JSON-safe cell: NaN/NaT/None become blank, numpy scalars plain Python numbers."""
    if value is None or (not isinstance(value, list | tuple) and pd.isna(value)):
        return ""
    if is_datetime:
        return to_serial(value)
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def frame_rows(frame: pd.DataFrame, spec: ReportSpec) -> list[list[Any]]:
    flags = [c in spec.datetime_columns for c in spec.columns]
    return [
        [cell(v, f) for v, f in zip(row, flags, strict=True)]
        for row in frame[spec.columns].itertuples(index=False, name=None)
    ]


@dataclass
class _Plan:
    data: list[dict[str, Any]] = field(default_factory=list)  # value ranges to write
    expected: list[tuple[str, int, list[str]]] = field(default_factory=list)  # (tab, first row, keys now there)
    moved: dict[str, list[int]] = field(default_factory=dict)
    next_row: dict[str, int] = field(default_factory=dict)
    rows_updated: int = 0
    rows_added: int = 0
    rows_moved: int = 0
    rows_kept_newer: int = 0


def upsert(
    client: SheetsClient,
    spreadsheet_id: str,
    frame: pd.DataFrame,
    spec: ReportSpec,
    tabs: dict[str, Tab] | None = None,
) -> UpsertResult:
    """``tabs``: the tab list if the caller read it for this write (the cell-budget check does: that
    read is counted in the result's reads), else read here."""
    result = UpsertResult(spreadsheet_id=spreadsheet_id)
    before = Counter(client.calls)
    frame = frame.reset_index(drop=True)
    targets = spec.tab_of(frame) if len(frame) else pd.Series(dtype="object")
    width = len(spec.columns)

    pre_read = tabs is not None
    tabs = dict(tabs) if tabs is not None else list_tabs(client, spreadsheet_id)
    missing = sorted(set(targets) - set(tabs))
    if missing:
        reply = client.execute(
            client.spreadsheets.batchUpdate(
                spreadsheetId=spreadsheet_id,
                body={"requests": [{"addSheet": {"properties": new_tab_properties(t, width)}} for t in missing]},
            ),
            "writes",
        )
        for answer in reply.get("replies", []):
            props = answer["addSheet"]["properties"]
            tabs[props["title"]] = Tab(props["sheetId"])
        result.tabs_added = missing

    read_tabs = tabs_to_read(sorted(t for t in tabs if spec.is_report_tab(t)), set(targets))
    rows = frame_rows(frame, spec)
    # A sort or an inserted row between our read and our write would make a row number point at
    # another lead: check the planned rows still hold the planned keys right before writing, and
    # plan again from a fresh read if they do not.
    for _attempt in range(MAX_PLANS):
        where = _existing_rows(client, spreadsheet_id, read_tabs, spec)
        plan = _plan(frame, targets, rows, where, tabs, spec)
        if _rows_still_in_place(client, spreadsheet_id, plan):
            break
        result.replans += 1
    else:
        raise RuntimeError(f"rows of {spreadsheet_id} kept moving while planning the write ({MAX_PLANS} tries)")
    result.rows_updated, result.rows_added = plan.rows_updated, plan.rows_added
    result.rows_moved, result.rows_kept_newer = plan.rows_moved, plan.rows_kept_newer

    for chunk in _payload_chunks(plan.data):
        client.execute(
            client.values.batchUpdate(
                spreadsheetId=spreadsheet_id, body={"valueInputOption": "RAW", "data": chunk}
            ),
            "writes",
        )

    requests = layout_requests(spec, tabs, sorted(set(targets)), plan.next_row, plan.moved, width)
    if requests:
        client.execute(
            client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body={"requests": requests}),
            "writes",
        )
    result.tab_ids = {title: tab.sheet_id for title, tab in tabs.items()}
    used = client.calls - before
    result.reads, result.writes, result.request_bytes = used["reads"] + pre_read, used["writes"], used["request_bytes"]
    return result


def tabs_to_read(report_tabs: list[str], targets: set[str]) -> list[str]:
    """The tabs whose keys the upsert reads: those it writes and the one before each.

    A row only moves tab when its tab value changes (a session whose start moves into the previous
    month), so older tabs cannot hold a touched key; reads stay at two tabs' key columns, however
    many months of tabs accumulate.
    """
    keep: set[str] = set()
    for index, tab in enumerate(report_tabs):
        if tab in targets:
            keep.add(tab)
            if index:
                keep.add(report_tabs[index - 1])
    return [t for t in report_tabs if t in keep]


def _plan(
    frame: pd.DataFrame,
    targets: pd.Series,
    rows: list[list[Any]],
    where: dict[str, tuple[str, int, Any]],
    tabs: dict[str, Tab],
    spec: ReportSpec,
) -> _Plan:
    plan = _Plan()
    last_col = column_letter(len(spec.columns) - 1)
    version = spec.columns.index(spec.version_column)
    last: dict[str, int] = {}
    for tab, row_number, _ in where.values():
        last[tab] = max(last.get(tab, 1), row_number)
    plan.next_row = {t: last.get(t, 1) + 1 for t in tabs}
    plan.data = [{"range": f"{quote_tab(t)}!A1:{last_col}1", "values": [spec.columns]} for t in sorted(set(targets))]
    updated: dict[str, dict[int, list[Any]]] = {}
    appended: dict[str, list[list[Any]]] = {}
    for key, tab, row in zip(frame[spec.key], targets, rows, strict=True):
        found = where.get(str(key))
        if found and _is_newer(found[2], row[version]):
            plan.rows_kept_newer += 1  # a later read already wrote this row: never go back
            continue
        if found and found[0] == tab:
            updated.setdefault(tab, {})[found[1]] = row
            plan.rows_updated += 1
            continue
        if found:  # the key's tab changed (its month moved): drop the old row after writing
            plan.moved.setdefault(found[0], []).append(found[1])
            plan.expected.append((found[0], found[1], [str(key)]))
            plan.rows_moved += 1
        appended.setdefault(tab, []).append(row)
        plan.rows_added += 1
    # After the previous run's sort, the rows a run touches sit mostly together (newest sessions at
    # the bottom, latest leads at the top): one range per run of consecutive rows, not per row.
    for tab, rows_by_number in updated.items():
        numbers = sorted(rows_by_number)
        run_start = 0
        for i in range(1, len(numbers) + 1):
            if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
                block = [rows_by_number[n] for n in numbers[run_start:i]]
                plan.data += _blocks(tab, numbers[run_start], block, last_col)
                plan.expected.append((tab, numbers[run_start], [str(r[0]) for r in block]))
                run_start = i
    for tab, new_rows in appended.items():
        first = plan.next_row.get(tab, 2)
        plan.data += _blocks(tab, first, new_rows, last_col)
        plan.expected.append((tab, first, [""] * len(new_rows)))  # still empty
        plan.next_row[tab] = first + len(new_rows)
    return plan


def _is_newer(existing: Any, ours: Any) -> bool:
    """Whether the sheet's ``Updated`` serial is later than ours (a blank or text cell is not)."""
    return isinstance(existing, int | float) and not isinstance(existing, bool) and existing > ours


def _rows_still_in_place(client: SheetsClient, spreadsheet_id: str, plan: _Plan) -> bool:
    """One read of the key cells the plan writes over: do they still hold what the plan saw?"""
    if not plan.expected:
        return True
    answer = client.execute(
        client.values.batchGet(
            spreadsheetId=spreadsheet_id,
            ranges=[f"{quote_tab(t)}!A{first}:A{first + len(keys) - 1}" for t, first, keys in plan.expected],
            valueRenderOption="UNFORMATTED_VALUE",
            majorDimension="COLUMNS",
        ),
        "reads",
    )
    for (_, _, keys), value_range in zip(plan.expected, answer.get("valueRanges", []), strict=True):
        found = [str(v) for v in (value_range.get("values") or [[]])[0]]
        if found + [""] * (len(keys) - len(found)) != keys:
            return False
    return True


def _existing_rows(
    client: SheetsClient, spreadsheet_id: str, tabs: list[str], spec: ReportSpec
) -> dict[str, tuple[str, int, Any]]:
    """key -> (tab, row number, its ``Updated`` value), from one read of two columns per tab."""
    if not tabs:
        return {}
    version = column_letter(spec.columns.index(spec.version_column))
    ranges = [r for t in tabs for r in (f"{quote_tab(t)}!A2:A", f"{quote_tab(t)}!{version}2:{version}")]
    answer = client.execute(
        client.values.batchGet(
            spreadsheetId=spreadsheet_id, ranges=ranges, valueRenderOption="UNFORMATTED_VALUE", majorDimension="COLUMNS"
        ),
        "reads",
    )
    value_ranges = answer.get("valueRanges", [])
    where: dict[str, tuple[str, int, Any]] = {}
    for index, tab in enumerate(tabs):
        keys = (value_ranges[2 * index].get("values") or [[]])[0]
        versions = (value_ranges[2 * index + 1].get("values") or [[]])[0]
        for offset, key in enumerate(keys):
            if key not in ("", None):
                where[str(key)] = (tab, offset + 2, versions[offset] if offset < len(versions) else None)
    return where


def _blocks(tab: str, first_row: int, rows: list[list[Any]], last_col: str) -> list[dict[str, Any]]:
    """Consecutive rows as value ranges, each small enough for one request."""
    entries: list[dict[str, Any]] = []
    start, size = 0, 0
    for i, row in enumerate(rows):
        row_size = len(json.dumps(row, ensure_ascii=False).encode()) + 2
        if i > start and size + row_size > MAX_PAYLOAD_BYTES:
            entries.append(_range_entry(tab, first_row + start, rows[start:i], last_col))
            start, size = i, 0
        size += row_size
    if rows:
        entries.append(_range_entry(tab, first_row + start, rows[start:], last_col))
    return entries


def _range_entry(tab: str, first_row: int, rows: list[list[Any]], last_col: str) -> dict[str, Any]:
    last_row = first_row + len(rows) - 1
    return {"range": f"{quote_tab(tab)}!A{first_row}:{last_col}{last_row}", "values": rows}


def _payload_chunks(data: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in data:
        entry_size = len(json.dumps(entry, ensure_ascii=False).encode())
        if chunks[-1] and size + entry_size > MAX_PAYLOAD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry_size
    return [c for c in chunks if c]
