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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from leadflow.config import GOOGLE_CONN_ID, REPORT_TIMEZONE

log = logging.getLogger(__name__)

SHEETS_EPOCH = pd.Timestamp("1899-12-30")
MAX_PAYLOAD_BYTES = 1_800_000  # below the ~2 MB Sheets recommends per request
DATETIME_FORMAT = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm"}
SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
MAX_PLANS = 3
NEW_TAB_ROWS = 1000
PROTECTED_DESCRIPTION = "leadflow: written every hour by the interaction_reports DAG"
SCOPES = ["https://www.googleapis.com/auth/spreadsheets", "https://www.googleapis.com/auth/drive.file"]


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


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def quote_tab(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


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


class SheetsClient:
    """googleapiclient's Sheets and Drive services for the ``google_cloud_default`` connection.

    The connection's extra ``api_endpoint`` (local stand-in only) sends every call there with
    anonymous credentials; without it the hook's normal credentials and Google's endpoint are
    used. googleapiclient retries 429 and 5xx itself, with exponential backoff, ``num_retries``
    times (connection extra ``num_retries``, default 5).
    """

    def __init__(self, conn_id: str = GOOGLE_CONN_ID) -> None:
        from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
        from google.auth.credentials import AnonymousCredentials
        from googleapiclient.discovery import build

        hook = GoogleBaseHook(gcp_conn_id=conn_id)
        endpoint = hook.get_connection(conn_id).extra_dejson.get("api_endpoint")
        credentials = AnonymousCredentials() if endpoint else hook.get_credentials()
        options = hook.get_client_options(endpoint)
        self.sheets = build("sheets", "v4", credentials=credentials, client_options=options, cache_discovery=False)
        self.drive = build("drive", "v3", credentials=credentials, client_options=options, cache_discovery=False)
        # Building a resource walks the discovery document (~50 ms, ~20 MB): build each once.
        self.spreadsheets = self.sheets.spreadsheets()
        self.values = self.spreadsheets.values()
        self.num_retries = hook.num_retries
        self.calls: Counter[str] = Counter()

    def execute(self, request: Any, kind: str) -> dict[str, Any]:
        self.calls[kind] += 1
        self.calls["request_bytes"] += len(request.body or b"")
        return request.execute(num_retries=self.num_retries)

    def create_spreadsheet(self, title: str, folder_id: str | None) -> str:
        """Create an empty spreadsheet; in ``folder_id`` (a shared drive's folder) if given.

        A service account has no My Drive storage: outside a shared drive Google answers 403
        ``storageQuotaExceeded``, so production sets the folder Variable.
        """
        if folder_id:
            request = self.drive.files().create(
                body={"name": title, "mimeType": SPREADSHEET_MIME, "parents": [folder_id]},
                supportsAllDrives=True,
                fields="id",
            )
            return self.execute(request, "writes")["id"]
        request = self.spreadsheets.create(body={"properties": {"title": title}}, fields="spreadsheetId")
        return self.execute(request, "writes")["spreadsheetId"]

    def name_first_tab(self, spreadsheet_id: str, title: str, width: int) -> None:
        """Turn the new spreadsheet's default tab into the report's first tab, sized to it."""
        meta = self.execute(self.spreadsheets.get(spreadsheetId=spreadsheet_id, fields="sheets.properties"), "reads")
        sheet_id = meta["sheets"][0]["properties"]["sheetId"]
        props = {"sheetId": sheet_id, **new_tab_properties(title, width)}
        fields = "title,gridProperties(rowCount,columnCount)"
        body = {"requests": [{"updateSheetProperties": {"properties": props, "fields": fields}}]}
        self.execute(self.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body=body), "writes")

    def share(self, spreadsheet_id: str, emails: Sequence[str], role: str) -> int:
        """Give each address ``role`` unless it already has a permission; returns how many were added.

        Idempotent, so a run retried after a failed share finishes the job instead of redoing it.
        """
        listed = self.execute(
            self.drive.permissions().list(
                fileId=spreadsheet_id, supportsAllDrives=True, fields="permissions(id,type,role,emailAddress)"
            ),
            "shares",
        )
        have = {str(p.get("emailAddress", "")).lower() for p in listed.get("permissions", [])}
        added = 0
        for email in emails:
            if email.lower() in have:
                continue
            request = self.drive.permissions().create(
                fileId=spreadsheet_id,
                body={"type": "user", "role": role, "emailAddress": email},
                sendNotificationEmail=False,
                supportsAllDrives=True,
            )
            self.execute(request, "shares")
            added += 1
        return added


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

    requests = _layout_requests(spec, tabs, sorted(set(targets)), plan.next_row, plan.moved, width)
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


@dataclass
class Tab:
    sheet_id: int
    has_filter: bool = False
    protected: bool = False
    cells: int = 0  # rowCount x columnCount: what Google counts against the workbook's cell limit


def new_tab_properties(title: str, width: int) -> dict[str, Any]:
    # The default 26 columns would spend ~2.6x the cells the report needs against the workbook's
    # 10-million-cell limit; rows grow as writes pass the edge.
    return {"title": title, "gridProperties": {"rowCount": NEW_TAB_ROWS, "columnCount": width}}


def list_tabs(client: SheetsClient, spreadsheet_id: str) -> dict[str, Tab]:
    """Title -> Tab, in sheet order (one read)."""
    meta = client.execute(
        client.spreadsheets.get(
            spreadsheetId=spreadsheet_id,
            fields="sheets(properties(sheetId,title,gridProperties(rowCount,columnCount)),"
            "basicFilter(range),protectedRanges(description))",
        ),
        "reads",
    )
    tabs = {}
    for s in meta.get("sheets", []):
        grid = s["properties"].get("gridProperties", {})
        tabs[s["properties"]["title"]] = Tab(
            s["properties"].get("sheetId", 0),  # proto3 JSON omits a 0 id
            has_filter="basicFilter" in s,
            protected=any(p.get("description") == PROTECTED_DESCRIPTION for p in s.get("protectedRanges", [])),
            cells=int(grid.get("rowCount", 0)) * int(grid.get("columnCount", 0)),
        )
    return tabs


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


def _layout_requests(
    spec: ReportSpec,
    tabs: dict[str, Tab],
    written: list[str],
    next_row: dict[str, int],
    moved: dict[str, list[int]],
    width: int,
) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = []
    for tab, rows in moved.items():
        for row in sorted(rows, reverse=True):  # bottom-up so earlier deletions do not shift later ones
            requests.append(
                {"deleteDimension": {"range": {"sheetId": tabs[tab].sheet_id, "dimension": "ROWS",
                                               "startIndex": row - 1, "endIndex": row}}}
            )  # fmt: skip
    # Month tabs in calendar order, whatever order runs created them in. Only when out of order
    # (``tabs`` is in sheet order), so the Dashboard and the team's own tabs stay where they are.
    report_tabs = [t for t in tabs if spec.is_report_tab(t)]
    for index, tab in enumerate(sorted(report_tabs) if report_tabs != sorted(report_tabs) else []):
        requests.append(
            {"updateSheetProperties": {"properties": {"sheetId": tabs[tab].sheet_id, "index": index},
                                       "fields": "index"}}
        )  # fmt: skip
    for tab in sorted(set(written) | set(moved)):
        sheet_id = tabs[tab].sheet_id
        end_row = next_row.get(tab, 2) - 1 - len(moved.get(tab, []))
        grid = {"sheetId": sheet_id, "startColumnIndex": 0, "endColumnIndex": width}
        requests += [
            {"updateSheetProperties": {
                "properties": {"sheetId": sheet_id, "gridProperties": {"frozenRowCount": 1}},
                "fields": "gridProperties.frozenRowCount"}},
            {"repeatCell": {
                "range": {**grid, "startRowIndex": 0, "endRowIndex": 1},
                "cell": {"userEnteredFormat": {"textFormat": {"bold": True}}},
                "fields": "userEnteredFormat.textFormat.bold"}},
        ]  # fmt: skip
        for name in spec.columns:
            if name in spec.datetime_columns:
                col = spec.columns.index(name)
                requests.append(
                    {"repeatCell": {
                        "range": {"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": col,
                                  "endColumnIndex": col + 1},
                        "cell": {"userEnteredFormat": {"numberFormat": DATETIME_FORMAT}},
                        "fields": "userEnteredFormat.numberFormat"}}
                )  # fmt: skip
        if end_row >= 2:
            sort_specs = [
                {"dimensionIndex": spec.columns.index(col), "sortOrder": "ASCENDING" if asc else "DESCENDING"}
                for col, asc in [*spec.sort_by, (spec.key, True)]
            ]
            # No end column: the sort carries whole rows, so columns the team adds on the right
            # (notes, owner) stay beside their lead.
            requests.append(
                {"sortRange": {"range": {"sheetId": sheet_id, "startRowIndex": 1, "endRowIndex": end_row,
                                         "startColumnIndex": 0},
                               "sortSpecs": sort_specs}}
            )  # fmt: skip
        if not tabs[tab].has_filter:  # the team's own filter settings are theirs to keep
            # Open-ended rows, so the filter covers the rows later runs append.
            requests.append({"setBasicFilter": {"filter": {"range": {**grid, "startRowIndex": 0}}}})
        if not tabs[tab].protected:
            # Warning-only: people may still edit (say, fix a name), but are told the DAG owns it.
            requests.append(
                {"addProtectedRange": {"protectedRange": {
                    "range": grid, "description": PROTECTED_DESCRIPTION, "warningOnly": True}}}
            )  # fmt: skip
        requests.append(
            {"autoResizeDimensions": {"dimensions": {"sheetId": sheet_id, "dimension": "COLUMNS",
                                                      "startIndex": 0, "endIndex": width}}}
        )  # fmt: skip
    return requests
