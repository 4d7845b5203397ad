"""The cell budget of a report spreadsheet, and the rollover to a new spreadsheet past it.

Google counts every cell of every tab's grid (rowCount x columnCount, the Dashboard included)
against a workbook's 10,000,000-cell limit, and past it every write fails. Before each upsert the
load step checks the tab list it reads anyway (grid sizes included, so a normal run makes no extra
call) against the budget (Variable ``leadflow_report_cell_budget``, default 9 M): the cells the
spreadsheet has, plus an upper bound of what this write adds (each new tab at its initial size,
each row of the frame as if appended past the grid). If that passes the budget the report rolls
over:

1. The decision goes into the report's rollover Variable (``{"from", "to", "tabs", ...}``).
2. A new spreadsheet is created the way the first one was (in the Drive folder, shared with the
   same people and role), titled with the year ("Leadflow — Session-wise report 2027", then
   "... 2027 (2)" if an earlier rollover took that title); its id goes into the rollover Variable
   and the report's Variable the moment the create returns.
3. Its default tab becomes "Earlier spreadsheets": every earlier spreadsheet (title, id, link),
   the list the old one had carried forward, plus the old one.
4. The tabs this write reads (its target tabs and the one before and after each, see ``tabs_to_read``;
   for the lead tabs, only the newest target's, as old leads are rewritten in their old month)
   are copied over with ``spreadsheets.sheets.copyTo`` (Google names a copy "Copy of <title>"),
   renamed, given back their filter and protection if the copy lost them, then deleted from the
   old spreadsheet, whose Dashboard is re-pointed at its latest remaining month in the same
   ``batchUpdate``. So every key the upsert can touch lives in the new spreadsheet only, and the
   old one keeps complete months, read-only in practice.
5. The rollover Variable is deleted; the upsert then writes into the new spreadsheet.

Crash-safety: while the rollover Variable exists, every load resumes it before writing, and each
step looks before it acts. A retry after the create never creates again (the id is in the
Variable); a retry after a copy finds the copy ("Copy of X", or X once renamed) and does not copy
again; copies made twice (a copy whose answer was lost and was retried) are deleted down to one;
a tab is deleted from the old spreadsheet only once the new one holds it; the Earlier list is
rewritten whole (the same rows) each time. The window a create cannot close, a crash between
the create returning and the Variable write, is the same as for the first spreadsheet.

A write whose tabs alone pass the budget cannot be helped by a new spreadsheet: the load fails
with ``CellBudgetExceeded`` (alerted once through the task-failure path) and names the tabs.
Not covered: a run that read the old id before the rollover and writes to a moved tab after the
copy (two runs of one report racing across the rollover) writes into the old spreadsheet's copy
that is about to be deleted; the next run rewrites the touched rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from leadflow.reports import dashboard
from leadflow.reports.row_index import RowIndex
from leadflow.reports.sheets import ReportSpec, UpsertResult, tabs_to_read, upsert
from leadflow.reports.sheets_api import NEW_TAB_ROWS, PROTECTED_DESCRIPTION, SheetsClient, Tab, list_tabs, quote_tab
from leadflow.reports.window import IST

log = logging.getLogger(__name__)

VAR_CELL_BUDGET = "leadflow_report_cell_budget"
DEFAULT_CELL_BUDGET = 9_000_000
GOOGLE_CELL_LIMIT = 10_000_000
EARLIER_TAB = "Earlier spreadsheets"
EARLIER_HEADER = ["Spreadsheet", "Spreadsheet ID", "Link", "Rolled over (UTC)"]
# A rollover in progress, per report (deleted when it is done).
ROLLOVER_VARIABLES: dict[dashboard.Kind, str] = {
    "sessions": "leadflow_session_report_rollover",
    "consolidated": "leadflow_consolidated_report_rollover",
}


class CellBudgetExceeded(RuntimeError):
    """The write cannot fit the budget even in a new spreadsheet."""


def cell_budget() -> int:
    from airflow.sdk import Variable

    raw = Variable.get(VAR_CELL_BUDGET, default=str(DEFAULT_CELL_BUDGET))
    try:
        budget = int(raw)
    except ValueError as error:
        raise ValueError(f"Variable {VAR_CELL_BUDGET} must be a whole number of cells, got {raw!r}") from error
    if not 0 < budget <= GOOGLE_CELL_LIMIT:
        raise ValueError(f"Variable {VAR_CELL_BUDGET} must be between 1 and {GOOGLE_CELL_LIMIT:,}, got {budget}")
    return budget


def link(spreadsheet_id: str) -> str:
    return f"https://docs.google.com/spreadsheets/d/{spreadsheet_id}"


def write_cells(tabs: Mapping[str, Tab], targets: Sequence[str], rows: int, width: int) -> int:
    """An upper bound of the cells a write adds: new tabs at their first size, every row past the grid."""
    return sum(NEW_TAB_ROWS * width for t in set(targets) if t not in tabs) + rows * width


@dataclass
class Destination:
    """Where and how a report's spreadsheets are made (the pipeline's Variables, read once)."""

    kind: dashboard.Kind
    spreadsheet_variable: str
    rollover_variable: str
    folder_id: str | None
    share_with: list[str]
    role: str


@dataclass
class Room:
    """Where the upsert writes: the spreadsheet, its tabs if already read, and any rollover done."""

    spreadsheet_id: str
    tabs: dict[str, Tab] | None
    rollover: dict[str, Any] | None = None
    # Target tabs an earlier spreadsheet holds (earlier_homes), if found for this spreadsheet.
    homes: dict[str, str] | None = None


def ensure_room(
    client: SheetsClient, spec: ReportSpec, where: Destination, spreadsheet_id: str, rows_per_tab: Mapping[str, int]
) -> Room:
    """The spreadsheet this write goes to, rolled over first if it would pass the cell budget.

    Rows of a month an earlier spreadsheet holds (a backfill after a rollover) are written there:
    they count against nothing here (counted as a new tab here, a backfill of an old month could
    roll a spreadsheet over, or fail, that had room for the rest of the write).
    """
    from airflow.sdk import Variable

    before_calls = sum(client.calls[kind] for kind in ("reads", "writes", "shares"))
    raw = Variable.get(where.rollover_variable, default=None)
    state = json.loads(raw) if raw else None
    if state is None:
        budget = cell_budget()
        tabs = list_tabs(client, spreadsheet_id)
        homes = earlier_homes(client, spec, spreadsheet_id, tabs, sorted(rows_per_tab))
        targets = sorted(t for t in rows_per_tab if t not in homes)
        rows = sum(rows_per_tab[t] for t in targets)
        before = sum(t.cells for t in tabs.values())
        width = len(spec.columns)
        if before + write_cells(tabs, targets, rows, width) <= budget:
            return Room(spreadsheet_id, tabs, homes=homes)
        report_tabs = sorted({t for t in tabs if spec.is_report_tab(t)} | set(targets))
        # Lead tabs: an hour also rewrites old leads in place, in their first month's tab; only
        # the newest target (and its neighbours) moves, so old months stay behind and archive.
        # Later writes of those months go back to the spreadsheet that holds them (earlier_homes).
        growing = set(targets) if spec.row_index is None else set(sorted(targets)[-1:])
        moving = [t for t in tabs_to_read(report_tabs, growing) if t in tabs]
        needed = (
            sum(tabs[t].cells for t in moving)
            + write_cells(tabs, targets, rows, width)
            + dashboard.DASHBOARD_ROWS * dashboard.DASHBOARD_COLUMNS
        )
        if needed > budget or (moving and not set(tabs) - set(moving)):
            sizes = ", ".join(f"{t}: {tabs[t].cells:,} cells" for t in moving) or "new tabs only"
            raise CellBudgetExceeded(
                f"The {where.kind} report's write needs {needed:,} cells ({sizes}) even in a new spreadsheet, "
                f"over the cell budget of {budget:,} (Variable {VAR_CELL_BUDGET}); spreadsheet {spreadsheet_id} "
                f"has {before:,}. A tab cannot be split across spreadsheets: raise the budget (Google's "
                f"limit is {GOOGLE_CELL_LIMIT:,}) or archive rows by hand."
            )
        now = datetime.now(UTC)
        state = {"from": spreadsheet_id, "to": None, "tabs": moving, "cells_before": before,
                 "at": now.strftime("%Y-%m-%d %H:%M UTC"), "year": _year(targets, now)}  # fmt: skip
        Variable.set(where.rollover_variable, json.dumps(state))
    new_id = _resume(client, spec, where, state)
    Variable.delete(where.rollover_variable)
    summary = {"old_spreadsheet_id": state["from"], "new_spreadsheet_id": new_id,
               "cells_before": state["cells_before"], "tabs_moved": state["tabs"],
               "calls": sum(client.calls[kind] for kind in ("reads", "writes", "shares")) - before_calls}  # fmt: skip
    log.warning("The %s report rolled over to a new spreadsheet (cell budget): %s", where.kind, summary)
    return Room(new_id, None, summary)


def _resume(client: SheetsClient, spec: ReportSpec, where: Destination, state: dict[str, Any]) -> str:
    from airflow.sdk import Variable

    old = state["from"]
    old_tabs = list_tabs(client, old)
    earlier = [*_earlier_rows(client, old, old_tabs), [_title(client, old), old, link(old), state["at"]]]
    new = state["to"]
    if not new:
        new = client.create_spreadsheet(_new_title(spec.title, state["year"], earlier), where.folder_id)
        state["to"] = new
        Variable.set(where.rollover_variable, json.dumps(state))
    Variable.set(where.spreadsheet_variable, new)  # again on a resume: a crash may have come between the two
    client.share(new, where.share_with, where.role)

    new_tabs = list_tabs(client, new)
    requests: list[dict[str, Any]] = []
    if EARLIER_TAB not in new_tabs:  # the new spreadsheet's default tab becomes the list
        first = next(iter(new_tabs.values()))
        props = {"sheetId": first.sheet_id, "title": EARLIER_TAB, "index": 0,
                 "gridProperties": {"rowCount": len(earlier) + 1, "columnCount": len(EARLIER_HEADER)}}  # fmt: skip
        fields = "title,index,gridProperties(rowCount,columnCount)"
        requests.append({"updateSheetProperties": {"properties": props, "fields": fields}})
    missing = [t for t in state["tabs"] if t not in new_tabs]
    copied = False
    for tab in missing:
        if not _copies(new_tabs, tab) and tab in old_tabs:
            client.execute(
                client.spreadsheets.sheets().copyTo(
                    spreadsheetId=old, sheetId=old_tabs[tab].sheet_id, body={"destinationSpreadsheetId": new}
                ),
                "writes",
            )
            copied = True
    if copied:
        new_tabs = list_tabs(client, new)
    for tab in missing:
        requests += _adopt_copy(spec, new_tabs, tab)
    if requests:
        client.execute(client.spreadsheets.batchUpdate(spreadsheetId=new, body={"requests": requests}), "writes")
    client.execute(
        client.values.update(
            spreadsheetId=new,
            range=f"{quote_tab(EARLIER_TAB)}!A1",
            valueInputOption="RAW",
            body={"values": [EARLIER_HEADER, *earlier]},
        ),
        "writes",
    )
    held = set(new_tabs) | {t for t in missing if _copies(new_tabs, t)}  # the batchUpdate renamed them
    _drop_moved_tabs(client, spec, where.kind, old, old_tabs, [t for t in state["tabs"] if t in held])
    return new


def _copies(tabs: Mapping[str, Tab], tab: str) -> list[str]:
    """Titles of the copies of ``tab`` copyTo made ("Copy of X", "Copy of X 2", ...), oldest first."""
    prefix = f"Copy of {tab}"
    return [t for t in tabs if t == prefix or (t.startswith(prefix + " ") and t[len(prefix) + 1 :].isdigit())]


def _adopt_copy(spec: ReportSpec, tabs: Mapping[str, Tab], tab: str) -> list[dict[str, Any]]:
    """Rename one copy of ``tab`` to its title, delete any other, restore filter and protection."""
    copies = _copies(tabs, tab)
    if not copies:
        return []
    keep = tabs[copies[0]]
    requests: list[dict[str, Any]] = [
        {"updateSheetProperties": {"properties": {"sheetId": keep.sheet_id, "title": tab}, "fields": "title"}},
        *({"deleteSheet": {"sheetId": tabs[extra].sheet_id}} for extra in copies[1:]),
    ]
    grid = {"sheetId": keep.sheet_id, "startColumnIndex": 0, "endColumnIndex": len(spec.columns)}
    if not keep.has_filter:
        requests.append({"setBasicFilter": {"filter": {"range": {**grid, "startRowIndex": 0}}}})
    if not keep.protected:
        requests.append({"addProtectedRange": {"protectedRange": {
            "range": grid, "description": PROTECTED_DESCRIPTION, "warningOnly": True}}})  # fmt: skip
    return requests


def _drop_moved_tabs(
    client: SheetsClient,
    spec: ReportSpec,
    kind: dashboard.Kind,
    old: str,
    old_tabs: Mapping[str, Tab],
    moved: list[str],
) -> None:
    """Delete the tabs the new spreadsheet now holds from the old one; re-point its dashboard."""
    gone = [t for t in moved if t in old_tabs]
    if not gone:
        return
    requests: list[dict[str, Any]] = [{"deleteSheet": {"sheetId": old_tabs[t].sheet_id}} for t in gone]
    left = {t: tab.sheet_id for t, tab in old_tabs.items() if t not in gone}
    months = sorted(t for t in left if spec.is_report_tab(t))
    repoint = dashboard.plan(kind, left, months[-1:], spec.is_report_tab)
    if repoint.action == "repoint":  # the "newer month tab added" path: pivots onto the latest month left
        # That tab has its highlighting already: only the pivots move.
        requests += [r for r in repoint.requests if "addConditionalFormatRule" not in r]
    client.execute(client.spreadsheets.batchUpdate(spreadsheetId=old, body={"requests": requests}), "writes")


def write_report(
    client: SheetsClient,
    spec: ReportSpec,
    where: Destination,
    spreadsheet_id: str,
    report: pd.DataFrame,
    index: RowIndex | None = None,
) -> tuple[UpsertResult, Room, dict[str, dict[str, Any]]]:
    """Upsert ``report`` where each of its rows belongs: the current spreadsheet (rolled over first
    if the write would pass the cell budget), or, for a backfill of a month an earlier spreadsheet
    holds, that one. Returns the current spreadsheet's result, the room, and the earlier ones'.

    Spreadsheets are written one after the other (Google has no atomic call across two): the
    current one first, which clears its copy of the keys that go to an earlier one (a session or
    lead whose start moved into a month an earlier spreadsheet holds), then the earlier ones.
    In that order the row index still says where the lead's copy is when it is cleared; written
    the other way round, the earlier write records the lead's new row over it, and a failure in
    between left a copy no later run could find. A failure between the two leaves the key in
    neither until the task's retry (or the next run: the watermark has not moved) writes it.
    """
    tab_of = spec.tab_of(report) if len(report) else pd.Series(dtype="object")
    rows_per_tab = {str(tab): int(n) for tab, n in tab_of.value_counts().items()}
    room = ensure_room(client, spec, where, spreadsheet_id, rows_per_tab)
    current_tabs = room.tabs if room.tabs is not None else list_tabs(client, room.spreadsheet_id)
    homes = room.homes
    if homes is None:  # a new spreadsheet: its "Earlier spreadsheets" list now ends with the old one
        homes = earlier_homes(client, spec, room.spreadsheet_id, current_tabs, sorted(rows_per_tab))
    home_of = tab_of.map(homes) if homes else pd.Series(None, index=report.index, dtype="object")
    away = home_of.notna()
    gone = dict(zip(report.loc[away, spec.key].astype(str), tab_of[away], strict=True))
    result = upsert(client, room.spreadsheet_id, report[~away], spec, tabs=current_tabs, elsewhere=gone, index=index)
    earlier = {
        home: upsert(client, home, report[home_of == home], spec, index=index).as_dict()
        for home in sorted(set(homes.values()))
    }
    return result, room, earlier


def earlier_homes(
    client: SheetsClient, spec: ReportSpec, spreadsheet_id: str, tabs: Mapping[str, Tab], targets: Sequence[str]
) -> dict[str, str]:
    """Target tabs an earlier spreadsheet holds (a backfill after a rollover): tab -> its spreadsheet.

    Each session is in exactly one spreadsheet: a month older than every month tab of the
    current spreadsheet belongs to the newest earlier spreadsheet that holds it or starts at or
    before it (the oldest one if none does), not to a new copy of the month in the current one.
    Costs nothing on an ordinary run; a backfill of an old month reads the "Earlier
    spreadsheets" list and the tab list of each earlier spreadsheet, newest first, until found.
    """
    months = sorted(t for t in tabs if spec.is_report_tab(t))
    older = sorted({t for t in targets if t not in tabs and months and t < months[0]})
    if not older or EARLIER_TAB not in tabs:
        return {}
    earlier = [str(row[1]) for row in _earlier_rows(client, spreadsheet_id, tabs) if len(row) > 1 and row[1]]
    homes: dict[str, str] = {}
    for candidate in reversed(earlier):  # the newest earlier spreadsheet first
        theirs = sorted(t for t in list_tabs(client, candidate) if spec.is_report_tab(t))
        for tab in older:
            if tab not in homes and theirs and (tab in theirs or theirs[0] <= tab):
                homes[tab] = candidate
        if len(homes) == len(older):
            break
    return {**dict.fromkeys(older, earlier[0]), **homes} if earlier else {}


def _earlier_rows(client: SheetsClient, spreadsheet_id: str, tabs: Mapping[str, Tab]) -> list[list[Any]]:
    if EARLIER_TAB not in tabs:
        return []
    answer = client.execute(
        client.values.get(spreadsheetId=spreadsheet_id, range=f"{quote_tab(EARLIER_TAB)}!A2:D"), "reads"
    )
    return [row for row in answer.get("values", []) if row and row[0]]


def _title(client: SheetsClient, spreadsheet_id: str) -> str:
    meta = client.execute(client.spreadsheets.get(spreadsheetId=spreadsheet_id, fields="properties(title)"), "reads")
    return str(meta["properties"]["title"])


def _new_title(base: str, year: int, earlier: Sequence[Sequence[Any]]) -> str:
    taken = {str(row[0]) for row in earlier}
    title, number = f"{base} {year}", 2
    while title in taken:
        title, number = f"{base} {year} ({number})", number + 1
    return title


def _year(targets: Sequence[str], now: datetime) -> int:
    """The year the new spreadsheet starts in: its newest month tab's ("2027-02"), else today's."""
    years = [int(t[:4]) for t in targets if t[:4].isdigit()]
    return max(years) if years else now.astimezone(IST).year
