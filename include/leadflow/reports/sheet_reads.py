"""What an upsert reads before it writes: where the keys' rows are, and the re-check that they
are still there.

Two ways to find the rows, chosen by the report's spec:

* ``TabScan`` (session tabs, sorted every run): the key and ``Updated`` columns of the tabs the
  write touches and the tab before and after each, read on every plan.
* ``IndexedRows`` (lead tabs, rows stay put): the row index in MongoDB for the touched keys, and
  the whole key column only of a tab the index cannot vouch for (see row_index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from leadflow.reports.row_index import KnownTab, RowIndex
from leadflow.reports.sheet_plan import Location, Plan
from leadflow.reports.sheets_api import SheetsClient, Tab, column_letter, quote_tab

if TYPE_CHECKING:
    from leadflow.reports.sheets import ReportSpec

Where = dict[str, list[Location]]


def existing_rows(client: SheetsClient, spreadsheet_id: str, tabs: list[str], spec: ReportSpec) -> Where:
    """key -> every row holding it, from one read of two columns per tab."""
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
    where: Where = {}
    for index, tab in enumerate(tabs):
        keys = (value_ranges[2 * index].get("values") or [[]])[0]
        versions = (value_ranges[2 * index + 1].get("values") or [[]])[0]
        for offset, key in enumerate(keys):
            if key not in ("", None):
                found = Location(tab, offset + 2, versions[offset] if offset < len(versions) else None)
                where.setdefault(str(key), []).append(found)
    return where


def misplaced_tabs(client: SheetsClient, spreadsheet_id: str, plan: Plan) -> set[str]:
    """One read of the key cells the plan writes over, clears or appends at: the tabs where they
    no longer hold what the plan expects (empty: the plan still fits the sheet)."""
    if not plan.expected:
        return set()
    answer = client.execute(
        client.values.batchGet(
            spreadsheetId=spreadsheet_id,
            ranges=[f"{quote_tab(t)}!A{first}:A{first + len(keys) - 1}" for t, first, keys in plan.expected],
            valueRenderOption="UNFORMATTED_VALUE",
            majorDimension="COLUMNS",
        ),
        "reads",
    )
    wrong: set[str] = set()
    for (tab, _, keys), value_range in zip(plan.expected, answer.get("valueRanges", []), strict=True):
        found = [str(v) for v in (value_range.get("values") or [[]])[0]]
        if found + [""] * (len(keys) - len(found)) != keys:
            wrong.add(tab)
    return wrong


@dataclass
class TabScan:
    """Session tabs: read the tabs' key columns on every plan (the sort moves every row)."""

    client: SheetsClient
    spreadsheet_id: str
    spec: ReportSpec
    tabs: list[str]

    def where(self) -> tuple[Where, dict[str, int] | None]:
        return existing_rows(self.client, self.spreadsheet_id, self.tabs, self.spec), None

    def misplaced(self, tabs: set[str]) -> None:
        """Nothing to forget: the next plan reads every tab again."""


@dataclass
class IndexedRows:
    """Lead tabs: the touched keys' rows from the index; a tab's key column only when the index
    cannot vouch for it (unknown to it here, or its re-check failed), then rebuilt."""

    client: SheetsClient
    spreadsheet_id: str
    spec: ReportSpec
    index: RowIndex
    tabs: dict[str, Tab]
    keys: set[str]
    trusted: dict[str, KnownTab] = field(init=False)
    to_scan: set[str] = field(init=False)
    scanned: dict[str, Where] = field(default_factory=dict, init=False)  # tab -> its keys' rows as read
    hints: dict[str, Location] = field(init=False)
    rebuilds: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        known = self.index.known_tabs(self.spreadsheet_id)
        report_tabs = {t for t in self.tabs if self.spec.is_report_tab(t)}
        # Same title and same tab id: a tab deleted and made again, or copied by a rollover, is new.
        self.trusted = {t: k for t, k in known.items() if t in report_tabs and self.tabs[t].sheet_id == k.sheet_id}
        self.to_scan = report_tabs - set(self.trusted)
        self.hints = self.index.lookup(self.keys)

    def where(self) -> tuple[Where, dict[str, int]]:
        pending = sorted(self.to_scan - set(self.scanned))
        if pending:
            found = existing_rows(self.client, self.spreadsheet_id, pending, self.spec)
            self.scanned.update({tab: {} for tab in pending})
            for key, locations in found.items():
                for loc in locations:
                    self.scanned[loc.tab].setdefault(key, []).append(loc)
            self.rebuilds += len(pending)
            # A key read in a rebuilt tab may also have a row elsewhere: keep both in the plan,
            # so the older copy is cleared as a duplicate rather than forgotten.
            self.hints.update(self.index.lookup(set(found) - set(self.hints)))
        where: Where = {}
        for key, loc in self.hints.items():
            if loc.tab in self.trusted and loc.tab not in self.scanned:
                where[key] = [loc]
        for keys in self.scanned.values():
            for key, locations in keys.items():
                where.setdefault(key, []).extend(locations)
        next_rows = {t: k.next_row for t, k in self.trusted.items() if t not in self.scanned}
        for tab, keys in self.scanned.items():
            next_rows[tab] = max((loc.row for locations in keys.values() for loc in locations), default=1) + 1
        return where, next_rows

    def misplaced(self, tabs: set[str]) -> None:
        """Those tabs' rows are not where the plan thought: read their key columns (again)."""
        for tab in tabs:
            self.to_scan.add(tab)
            self.scanned.pop(tab, None)
