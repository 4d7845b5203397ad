"""Where each key's row is, kept in MongoDB, so an upsert of tabs whose rows stay put reads and
writes only the rows it touches, however many rows the tabs hold.

The lead tabs are never sorted by the DAG: a new lead is appended below the tab's data, an
existing one rewritten in place, the old row of a lead that moved tab (or of a duplicate) is
cleared and left blank. So a row stays where it was written, and where each key's row is can be
remembered. Not in Google: developer metadata holds 30,000 characters per spreadsheet, not a
million keys. In MongoDB, one small document per key and one per tab:

* ``report_rows_<report>``: ``{_id: key, tab, row, version}`` (``version``: the row's
  ``Updated`` serial, so "never replace a row with data read earlier" needs no sheet read);
* ``report_row_tabs``: ``{_id: "<collection>|<tab>", spreadsheet, sheet_id, next_row}``: the
  spreadsheet and tab id the entries were made in, and the first row below the tab's data.

The index is a hint, checked before every write: the upsert's re-check read of the key cells it
writes over, clears or appends at (one ``values.batchGet`` of the touched rows only) must find
what the index says. A tab the index cannot vouch for is read once, key and ``Updated`` columns,
and its entries rebuilt from that read; each is counted in the run summary as
``index_rebuilds``. That happens to a tab whose re-check failed (people sorted it, inserted or
deleted rows), a tab the index has no record of in this spreadsheet under this tab id (the first
run, a tab a rollover copied into a new spreadsheet, a tab deleted and made again, a lost index),
and never otherwise. The entries are written after the Sheets write lands; if that write fails
or its answer is lost, the index keeps the old locations and the next re-check finds the
difference (an appended row sits where the index says the next free row is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from leadflow.reports.sheet_plan import Location

TABS = "report_row_tabs"
LEADS_ROW_INDEX = "report_rows_consolidated"  # the consolidated report's key collection
LOOKUP_CHUNK = 1000  # keys per $in query


@dataclass(frozen=True)
class KnownTab:
    sheet_id: int
    next_row: int


@dataclass
class RowIndex:
    db: Database
    collection: str  # the report's key collection (its ReportSpec.row_index)

    def known_tabs(self, spreadsheet_id: str) -> dict[str, KnownTab]:
        """The tabs whose every key has an entry, as recorded for ``spreadsheet_id``."""
        docs = self.db[TABS].find({"index": self.collection, "spreadsheet": spreadsheet_id})
        return {doc["tab"]: KnownTab(int(doc["sheet_id"]), int(doc["next_row"])) for doc in docs}

    def lookup(self, keys: Iterable[str]) -> dict[str, Location]:
        """key -> its recorded row, for the keys that have one (by ``_id``: index-backed)."""
        wanted = sorted(set(keys))
        found: dict[str, Location] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            for doc in self.db[self.collection].find({"_id": {"$in": wanted[start : start + LOOKUP_CHUNK]}}):
                found[str(doc["_id"])] = Location(str(doc["tab"]), int(doc["row"]), doc.get("version"))
        return found

    def save(
        self,
        spreadsheet_id: str,
        placed: Mapping[str, Location],
        cleared: Iterable[tuple[str, Location]],
        tabs: Mapping[str, KnownTab],
        rebuilt: Iterable[str],
        recount: Iterable[str] = (),
    ) -> None:
        """Record a landed write: where each written (or re-read) key's row is now, the rows it
        cleared, and each tab's next free row. A rebuilt tab's old entries go first, so a key that
        is no longer there keeps no entry pointing into it. ``recount``: tabs where the write
        cleared rows; their next free row is recounted from the entries, so cleared rows at the
        bottom are reused and the row below the data (where people paste) is re-checked."""
        ops: list[Any] = [DeleteMany({"tab": tab}) for tab in sorted(set(rebuilt))]
        # Only the entry that points at the cleared row: a key that moved into another
        # spreadsheet has its new entry already (written by that spreadsheet's upsert).
        ops += [DeleteOne({"_id": key, "tab": loc.tab, "row": loc.row}) for key, loc in cleared if key not in placed]
        ops += [
            ReplaceOne({"_id": key}, {"tab": loc.tab, "row": loc.row, "version": loc.version}, upsert=True)
            for key, loc in placed.items()
        ]
        if ops:
            self.db[self.collection].bulk_write(ops, ordered=True)
        tabs = dict(tabs)
        for title in sorted(set(recount) & set(tabs)):
            last = self.db[self.collection].find_one({"tab": title}, {"row": 1}, sort=[("row", -1)])
            tabs[title] = KnownTab(tabs[title].sheet_id, int(last["row"]) + 1 if last else 2)
        tab_ops = [
            UpdateOne(
                {"_id": f"{self.collection}|{title}"},
                {"$set": {"index": self.collection, "tab": title, "spreadsheet": spreadsheet_id,
                          "sheet_id": tab.sheet_id, "next_row": tab.next_row}},
                upsert=True,
            )
            for title, tab in sorted(tabs.items())
        ]  # fmt: skip
        if tab_ops:
            self.db[TABS].bulk_write(tab_ops, ordered=True)
