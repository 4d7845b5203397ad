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


@dataclass
class UpsertResult:
    spreadsheet_id: str
    rows_updated: int = 0
    rows_added: int = 0
    rows_moved: int = 0
    tabs_added: list[str] = field(default_factory=list)
    reads: int = 0
    writes: int = 0
    request_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


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

    def create_spreadsheet(self, title: str, tabs: Sequence[str]) -> str:
        body = {"properties": {"title": title}, "sheets": [{"properties": {"title": t}} for t in tabs]}
        created = self.execute(self.spreadsheets.create(body=body, fields="spreadsheetId"), "writes")
        return created["spreadsheetId"]

    def share(self, spreadsheet_id: str, emails: Sequence[str]) -> None:
        for email in emails:
            request = self.drive.permissions().create(
                fileId=spreadsheet_id,
                body={"type": "user", "role": "writer", "emailAddress": email},
                sendNotificationEmail=False,
            )
            self.execute(request, "shares")


def upsert(client: SheetsClient, spreadsheet_id: str, frame: pd.DataFrame, spec: ReportSpec) -> UpsertResult:
    result = UpsertResult(spreadsheet_id=spreadsheet_id)
    before = Counter(client.calls)
    frame = frame.reset_index(drop=True)
    targets = spec.tab_of(frame) if len(frame) else pd.Series(dtype="object")
    width = len(spec.columns)
    last_col = column_letter(width - 1)

    tabs = _tab_ids(client, spreadsheet_id)
    missing = sorted(set(targets) - set(tabs))
    if missing:
        reply = client.execute(
            client.spreadsheets.batchUpdate(
                spreadsheetId=spreadsheet_id,
                body={"requests": [{"addSheet": {"properties": {"title": t}}} for t in missing]},
            ),
            "writes",
        )
        for answer in reply.get("replies", []):
            props = answer["addSheet"]["properties"]
            tabs[props["title"]] = props["sheetId"]
        result.tabs_added = missing

    report_tabs = sorted(t for t in tabs if spec.is_report_tab(t))
    where = _existing_keys(client, spreadsheet_id, report_tabs)  # key -> (tab, row number)
    last = _last_rows(where)
    next_row = {t: last.get(t, 1) + 1 for t in tabs}

    data: list[dict[str, Any]] = [
        {"range": f"{quote_tab(t)}!A1:{last_col}1", "values": [spec.columns]} for t in sorted(set(targets))
    ]
    moved: dict[str, list[int]] = {}
    updated: dict[str, dict[int, list[Any]]] = {}
    appended: dict[str, list[list[Any]]] = {}
    for key, tab, row in zip(frame[spec.key], targets, frame_rows(frame, spec), strict=True):
        found = where.get(str(key))
        if found and found[0] == tab:
            updated.setdefault(tab, {})[found[1]] = row
            result.rows_updated += 1
            continue
        if found:  # the key's tab changed (its month moved): drop the old row after writing
            moved.setdefault(found[0], []).append(found[1])
            result.rows_moved += 1
        appended.setdefault(tab, []).append(row)
        result.rows_added += 1
    # After the previous run's sort, the rows a run touches sit mostly together (newest sessions at
    # the bottom, latest leads at the top): one range per run of consecutive rows, not per row.
    for tab, rows_by_number in updated.items():
        numbers = sorted(rows_by_number)
        run_start = 0
        for i in range(1, len(numbers) + 1):
            if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
                block = [rows_by_number[n] for n in numbers[run_start:i]]
                data += _blocks(tab, numbers[run_start], block, last_col)
                run_start = i
    for tab, rows in appended.items():
        first = next_row.get(tab, 2)
        data += _blocks(tab, first, rows, last_col)
        next_row[tab] = first + len(rows)

    for chunk in _payload_chunks(data):
        client.execute(
            client.values.batchUpdate(
                spreadsheetId=spreadsheet_id, body={"valueInputOption": "RAW", "data": chunk}
            ),
            "writes",
        )

    requests = _layout_requests(spec, tabs, sorted(set(targets)), next_row, moved, width)
    if requests:
        client.execute(
            client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body={"requests": requests}),
            "writes",
        )
    used = client.calls - before
    result.reads, result.writes, result.request_bytes = used["reads"], used["writes"], used["request_bytes"]
    return result


def _tab_ids(client: SheetsClient, spreadsheet_id: str) -> dict[str, int]:
    meta = client.execute(
        client.spreadsheets.get(spreadsheetId=spreadsheet_id, fields="sheets.properties"), "reads"
    )
    return {s["properties"]["title"]: s["properties"]["sheetId"] for s in meta.get("sheets", [])}


def _existing_keys(client: SheetsClient, spreadsheet_id: str, tabs: list[str]) -> dict[str, tuple[str, int]]:
    if not tabs:
        return {}
    answer = client.execute(
        client.values.batchGet(
            spreadsheetId=spreadsheet_id,
            ranges=[f"{quote_tab(t)}!A2:A" for t in tabs],
            valueRenderOption="UNFORMATTED_VALUE",
            majorDimension="COLUMNS",
        ),
        "reads",
    )
    where: dict[str, tuple[str, int]] = {}
    for tab, value_range in zip(tabs, answer.get("valueRanges", []), strict=True):
        column = (value_range.get("values") or [[]])[0]
        for offset, key in enumerate(column):
            if key not in ("", None):
                where[str(key)] = (tab, offset + 2)
    return where


def _last_rows(where: dict[str, tuple[str, int]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for tab, row in where.values():
        last[tab] = max(last.get(tab, 1), row)
    return last


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
    tabs: dict[str, int],
    written: list[str],
    next_row: dict[str, int],
    moved: dict[str, list[int]],
    width: int,
) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = []
    for tab, rows in moved.items():
        for row in sorted(rows, reverse=True):  # bottom-up so earlier deletions do not shift later ones
            requests.append(
                {"deleteDimension": {"range": {"sheetId": tabs[tab], "dimension": "ROWS",
                                               "startIndex": row - 1, "endIndex": row}}}
            )  # fmt: skip
    # Month tabs in calendar order, whatever order runs created them in.
    for index, tab in enumerate(sorted(t for t in tabs if spec.is_report_tab(t))):
        requests.append(
            {"updateSheetProperties": {"properties": {"sheetId": tabs[tab], "index": index}, "fields": "index"}}
        )
    for tab in sorted(set(written) | set(moved)):
        sheet_id = tabs[tab]
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
            requests.append(
                {"sortRange": {"range": {**grid, "startRowIndex": 1, "endRowIndex": end_row},
                               "sortSpecs": sort_specs}}
            )  # fmt: skip
        requests += [
            {"setBasicFilter": {"filter": {"range": {**grid, "startRowIndex": 0, "endRowIndex": max(end_row, 1)}}}},
            {"autoResizeDimensions": {"dimensions": {"sheetId": sheet_id, "dimension": "COLUMNS",
                                                      "startIndex": 0, "endIndex": width}}},
        ]  # fmt: skip
    return requests
