"""Write report frames to Google Sheets: upsert by key, a bounded number of API calls per run.

One key, one row, one place. The upsert of one report reads the spreadsheet's tabs (1, or the
caller's read), the key and ``Updated`` columns of the tabs it writes and the tab before and
after each (1), and the key cells of the rows it will overwrite, clear or append at (1). Then it
writes all values in one ``spreadsheets.batchUpdate`` (split only if the payload passes ~1.8 MB
as sent): new tabs, changed rows in place and new rows (``updateCells`` at named rows), and the
clearing of the old rows of keys that moved tab and of every duplicate of a key. Google applies
a batchUpdate's requests all or none, so a session whose start moves into the previous month
is in exactly one tab whether the call succeeds or fails, and a duplicate found on a read (left
by hand, or by a write before this design) is cleared and counted in ``duplicates_repaired``.
A second call lays the tabs out (sort, freeze, filter, formats, sizes; see sheet_layout); the
sort takes cleared rows to the bottom. Rows of keys this run did not touch are left as they
are; the sort puts every row where the on-time runs would have, which makes reruns and
backfills in any order converge. What to write is planned in ``sheet_plan``.

Values are written RAW (``userEnteredValue.stringValue`` is never parsed: a name like
``=HYPERLINK(..)`` stays text), numbers stay numbers, and datetimes go as Sheets serial numbers
in IST wall time with a ``yyyy-mm-dd hh:mm`` format, so the sales team can sort and filter them.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from leadflow.config import REPORT_TIMEZONE
from leadflow.reports.row_index import KnownTab, RowIndex
from leadflow.reports.sheet_layout import layout_requests
from leadflow.reports.sheet_plan import Plan, consecutive, plan_write
from leadflow.reports.sheet_reads import IndexedRows, TabScan, misplaced_tabs
from leadflow.reports.sheets_api import SheetsClient, Tab, list_tabs, new_tab_properties

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
    # Set: rows stay where they are written (no sort per run) and a key -> row index in this
    # MongoDB collection says where they are (see row_index). None: each run reads the key
    # columns of the tabs it writes and the tabs next to them, and sorts those tabs.
    row_index: str | None = None


@dataclass
class UpsertResult:
    spreadsheet_id: str
    rows_updated: int = 0
    rows_added: int = 0
    rows_moved: int = 0
    rows_kept_newer: int = 0  # rows the sheet already holds from a later read
    duplicates_repaired: int = 0  # extra rows of one key (left by hand edits or an old failure), deleted
    replans: int = 0  # times rows moved under us (a sort, an inserted row) and the write was re-planned
    # Tabs whose whole key column was read because the row index could not vouch for them (a
    # re-sorted tab, a tab new to the index): the fallback, 0 on an ordinary run.
    index_rebuilds: int = 0
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


def upsert(
    client: SheetsClient,
    spreadsheet_id: str,
    frame: pd.DataFrame,
    spec: ReportSpec,
    tabs: dict[str, Tab] | None = None,
    elsewhere: Mapping[str, str] | None = None,
    index: RowIndex | None = None,
) -> UpsertResult:
    """``tabs``: the tab list if the caller read it for this write (the cell-budget check does: that
    read is counted in the result's reads), else read here. ``elsewhere``: key -> tab of the rows
    this run writes into another spreadsheet (a backfill after a rollover); any copy of those
    keys here (in the tabs next to that tab, or where the row index says) is cleared, counted in
    ``rows_moved``. ``index``: the report's row index, required when its spec keeps one."""
    elsewhere = elsewhere or {}
    result = UpsertResult(spreadsheet_id=spreadsheet_id)
    before = Counter(client.calls)
    frame = frame.reset_index(drop=True)
    targets = spec.tab_of(frame) if len(frame) else pd.Series(dtype="object")
    width = len(spec.columns)

    pre_read = tabs is not None
    tabs = dict(tabs) if tabs is not None else list_tabs(client, spreadsheet_id)
    existing = set(tabs)
    missing = sorted(set(targets) - existing)
    # New tabs are added in the same batchUpdate as their rows, under ids chosen here (Google
    # accepts any unused non-negative id), so a failed write leaves no empty tab behind.
    add_tabs: list[dict[str, Any]] = []
    for title in missing:
        tabs[title] = Tab(_free_sheet_id(tabs, title))
        add_tabs.append({"addSheet": {"properties": {"sheetId": tabs[title].sheet_id,
                                                      **new_tab_properties(title, width)}}})  # fmt: skip
    result.tabs_added = missing

    rows = frame_rows(frame, spec)
    finder: TabScan | IndexedRows
    if spec.row_index is None:
        report_tabs = sorted(t for t in tabs if spec.is_report_tab(t))
        read_tabs = [t for t in tabs_to_read(report_tabs, set(targets) | set(elsewhere.values())) if t in existing]
        finder = TabScan(client, spreadsheet_id, spec, read_tabs)
    else:
        if index is None:
            raise ValueError(f"the {spec.title!r} report keeps a row index: pass its RowIndex")
        keys = set(frame[spec.key].astype(str)) | set(elsewhere)
        finder = IndexedRows(client, spreadsheet_id, spec, index, {t: tabs[t] for t in existing}, keys)
    # A sort or an inserted row between our read and our write would make a row number point at
    # another lead (and the index may be stale): check the rows the plan writes or clears still
    # hold the planned keys (and the rows it appends at are still empty) right before writing;
    # plan again if they do not, reading the tabs that failed.
    for _attempt in range(MAX_PLANS):
        where, next_rows = finder.where()
        plan = plan_write(frame, targets, rows, where, spec, set(elsewhere), next_rows)
        # And below the last row the plan knows of, every tab it writes must be blank: a row
        # pasted or appended there by hand (or by a write whose answer was lost) shows up here.
        for tab in sorted((set(targets) | set(plan.clears)) & existing):
            end = plan.next_row.get(tab, 2) + len(plan.appends.get(tab, [])) + len(plan.move_appends.get(tab, []))
            plan.expected.append((tab, end, [""] * (tabs[tab].row_count - end + 1)))
        # A tab added by this write is empty, and so are rows past a grid's edge (Google refuses
        # to read there: "exceeds grid limits").
        plan.expected = [
            (tab, first, keys[: tabs[tab].row_count - first + 1])
            for tab, first, keys in plan.expected
            if tab in existing and first <= tabs[tab].row_count
        ]
        wrong = misplaced_tabs(client, spreadsheet_id, plan)
        if not wrong:
            break
        finder.misplaced(wrong)
        result.replans += 1
    else:
        raise RuntimeError(f"rows of {spreadsheet_id} kept moving while planning the write ({MAX_PLANS} tries)")
    for name in ("rows_updated", "rows_added", "rows_moved", "rows_kept_newer", "duplicates_repaired"):
        setattr(result, name, getattr(plan, name))

    written = sorted(set(targets))
    for requests in _value_batches(add_tabs, plan, written, tabs, spec):
        client.execute(
            client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body={"requests": requests}), "writes"
        )
    end_rows = {
        tab: plan.next_row.get(tab, 2) + len(plan.appends.get(tab, [])) + len(plan.move_appends.get(tab, []))
        for tab in set(written) | set(plan.clears)
    }
    if isinstance(finder, IndexedRows):
        result.index_rebuilds = finder.rebuilds
        next_free = {**(next_rows or {}), **end_rows}
        known = {t: KnownTab(tabs[t].sheet_id, next_free[t]) for t in set(end_rows) | set(finder.scanned)}
        index.save(spreadsheet_id, plan.placed, plan.cleared, known, finder.scanned, recount=set(plan.clears))  # type: ignore[union-attr]
        # Rows stay where they are (the index relies on it): only a new tab, or one that lost the
        # filter or protection, is laid out; people sort with filter views.
        laid_out = {t: 0 for t in end_rows if t in missing or not tabs[t].has_filter or not tabs[t].protected}
        layout = layout_requests(spec, tabs, laid_out, width, sort=False)
    else:
        layout = layout_requests(spec, tabs, {tab: end - 1 for tab, end in end_rows.items()}, width)
    if layout:
        client.execute(
            client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body={"requests": layout}), "writes"
        )
    result.tab_ids = {title: tab.sheet_id for title, tab in tabs.items()}
    used = client.calls - before
    result.reads, result.writes, result.request_bytes = used["reads"] + pre_read, used["writes"], used["request_bytes"]
    return result


def tabs_to_read(report_tabs: list[str], targets: set[str]) -> list[str]:
    """The tabs whose keys the upsert reads: those it writes and the one before and after each.

    A row only changes tab when its tab value changes: a session whose start moves into the
    previous month (a late, earlier message) leaves the tab *after* its new one; a correction
    the other way, the tab before. Reads stay at three tabs' key columns, however many months
    of tabs accumulate.
    """
    ordered = sorted(set(report_tabs) | targets)
    keep: set[str] = set()
    for index, tab in enumerate(ordered):
        if tab in targets:
            keep.update(ordered[max(index - 1, 0) : index + 2])
    return [t for t in ordered if t in keep]


def _free_sheet_id(tabs: dict[str, Tab], title: str) -> int:
    """A stable id for a new tab (the same on a retry), not used by any tab."""
    taken = {tab.sheet_id for tab in tabs.values()}
    sheet_id = zlib.crc32(title.encode()) & 0x3FFFFFFF
    while sheet_id in taken or sheet_id == 0:
        sheet_id += 1
    return sheet_id


def _cell_data(value: Any) -> dict[str, Any]:
    """A RAW cell for ``updateCells``/``appendCells``: a string is never parsed (no formulas)."""
    if value == "" or value is None:
        return {}
    if isinstance(value, bool):
        return {"userEnteredValue": {"boolValue": value}}
    if isinstance(value, int | float):
        return {"userEnteredValue": {"numberValue": value}}
    return {"userEnteredValue": {"stringValue": str(value)}}


def _row_data(row: list[Any]) -> dict[str, Any]:
    return {"values": [_cell_data(v) for v in row]}


def sent_size(payload: Any) -> int:
    """Bytes of ``payload`` as googleapiclient sends it: ``json.dumps`` defaults, so every
    non-ASCII character is a ``\\uXXXX`` escape (Devanagari is 6 bytes a letter, not 3)."""
    return len(json.dumps(payload))


def _write_rows(tab: Tab, first_row: int, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """``updateCells`` requests writing ``rows`` from ``first_row`` on, each below the payload limit."""
    requests: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    size, start = 0, first_row
    for row in rows:
        data = _row_data(row)
        row_size = sent_size(data) + 2
        if batch and size + row_size > MAX_PAYLOAD_BYTES:
            requests.append(_update_cells(tab, start, batch))
            start, batch, size = start + len(batch), [], 0
        batch.append(data)
        size += row_size
    if batch:
        requests.append(_update_cells(tab, start, batch))
    return requests


def _update_cells(tab: Tab, first_row: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"updateCells": {"start": {"sheetId": tab.sheet_id, "rowIndex": first_row - 1, "columnIndex": 0},
                            "rows": rows, "fields": "userEnteredValue"}}  # fmt: skip


def _clear_row(tab: Tab, row: int) -> dict[str, Any]:
    """Clear the values of a whole row (the team's columns too: a note must not outlive its row).
    A cleared row, not a deleted one: replayed (googleapiclient resends a request whose answer
    was lost), a clear clears the same row again, where a ``deleteDimension`` would delete the
    row that moved up into its place. The sort then takes blank rows to the bottom, where the
    next appends reuse them."""
    rng = {"sheetId": tab.sheet_id, "startRowIndex": row - 1, "endRowIndex": row}
    return {"updateCells": {"range": rng, "fields": "userEnteredValue"}}


def _value_batches(
    add_tabs: list[dict[str, Any]], plan: Plan, written: list[str], tabs: dict[str, Tab], spec: ReportSpec
) -> list[list[dict[str, Any]]]:
    """The values of the write as few ``batchUpdate`` calls as the payload limit allows, usually one.

    A batchUpdate is atomic (Google: if any request is not valid, none is applied), so the last
    call carries every row that moves together with the clearing of its old row, and the
    clearing of duplicates: a key is never left in two places, nor in none. Calls before it only
    add tabs, rewrite rows in place and write keys new to the sheet, which a retry redoes
    harmlessly (it finds them and updates them in place). Every request names its rows, so a
    replayed call writes the same cells again (rows past the grid are added by
    ``appendDimension``, which a replay can only repeat as blank rows).
    """
    head: list[dict[str, Any]] = list(add_tabs)
    for tab in written:
        head += _write_rows(tabs[tab], 1, [spec.columns])
    for tab, by_row in plan.updates.items():
        for first, block in consecutive(by_row):
            head += _write_rows(tabs[tab], first, block)
    tail: list[dict[str, Any]] = []
    for tab in sorted(set(plan.appends) | set(plan.move_appends)):
        new, moving = plan.appends.get(tab, []), plan.move_appends.get(tab, [])
        first = plan.next_row[tab]
        end = first + len(new) + len(moving) - 1
        if end > tabs[tab].row_count:
            grow = {"appendDimension": {"sheetId": tabs[tab].sheet_id, "dimension": "ROWS",
                                        "length": end - tabs[tab].row_count}}  # fmt: skip
            head.append(grow)
            tabs[tab].row_count = end
        head += _write_rows(tabs[tab], first, new)
        tail += _write_rows(tabs[tab], first + len(new), moving)
    tail += [_clear_row(tabs[tab], row) for tab, rows in sorted(plan.clears.items()) for row in sorted(rows)]
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for request in head:
        request_size = sent_size(request) + 2
        if batches[-1] and size + request_size > MAX_PAYLOAD_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(request)
        size += request_size
    if tail and batches[-1] and size + sum(sent_size(r) + 2 for r in tail) > MAX_PAYLOAD_BYTES:
        batches.append([])
    batches[-1] += tail
    return [b for b in batches if b]
