"""Sheets-side cost of one hourly consolidated-report write against the number of leads.

    python -m bench.sheets [--sizes 100000,500000,1000000] [--touched 1000] [--months 24]

For each size, the lead tabs as the report leaves them are put straight into an in-memory Sheets
stand-in (``SheetsServer.seed``; a million rows through batchUpdate would take longer than the
run measured) and the row index into the MongoDB stand-in: the leads spread evenly over
``--months`` ``Leads YYYY-MM`` tabs, the older half of the months in an earlier spreadsheet (a
rollover happened: a million leads x 13 columns is past Google's 10 M cells per spreadsheet),
the newer half in the current one, which lists the earlier one in "Earlier spreadsheets". Then
one hour's write runs through the real client and ``write_report`` (what ``load_step`` calls):
``--touched`` leads, 80 % recent (leads of the latest month chatting again), 10 % old leads
writing again (spread over every older month, both spreadsheets), 10 % new leads.

Printed per size (three such hours, each its own sample of leads; timings are their median,
the machine being shared): Sheets calls, bytes sent and received (the stand-in's own call log:
what Google would see), wall seconds in Sheets calls (client and stand-in), CPU seconds of this
process (client, pandas and the in-process stand-in; not MongoDB), wall seconds for the whole
write (the row index's MongoDB lookups and updates included: the secantus stand-in's ``_id``
lookups slow down as its collection grows, which MongoDB's ``_id`` index does not), the tabs
read whole (``index_rebuilds``), and the max/min ratio of each figure across the sizes (the
goal: at most 1.2). A second line per size is the run right after people re-sorted the
latest lead tab: the re-check finds its rows moved, and that tab's key column is read once.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from devstack import clients
from devstack._http import serve_in_thread
from devstack.sheets_server import Sheet, SheetsServer, Spreadsheet

CURRENT, EARLIER = "bench-current", "bench-earlier"
LATEST = pd.Timestamp("2027-01-01T00:00:00Z")
READ_AT = pd.Timestamp("2027-01-20T05:30:00Z")
TIMINGS = ("sheets_seconds", "cpu_seconds", "seconds")


def month_titles(months: int) -> list[str]:
    """``Leads YYYY-MM`` for the ``months`` months up to LATEST's, oldest first."""
    periods = pd.period_range(end=LATEST.tz_localize(None).to_period("M"), periods=months, freq="M")
    return [f"Leads {p.strftime('%Y-%m')}" for p in periods]


def lead_month(lead: int, leads: int, months: int) -> int:
    return lead * months // leads


def first_lead_of(month: int, leads: int, months: int) -> int:
    """The first lead (by number) of month ``month``: leads are numbered in month order."""
    return -(-month * leads // months)


def seed(server: SheetsServer, db: Any, leads: int, months: int, columns: list[str]) -> None:
    """Both spreadsheets and the row index, as months of hourly writes (and one rollover) leave them."""
    from leadflow.reports import sheets
    from leadflow.reports.rollover import EARLIER_HEADER, EARLIER_TAB
    from leadflow.reports.row_index import LEADS_ROW_INDEX, TABS
    from leadflow.reports.sheets_api import PROTECTED_DESCRIPTION

    titles = month_titles(months)
    updated = sheets.to_serial(LATEST)
    books = {EARLIER: [], CURRENT: []}
    entries, tab_docs = [], []
    for number, title in enumerate(titles):
        home = EARLIER if number < months // 2 else CURRENT
        first_lead = first_lead_of(number, leads, months)
        count = first_lead_of(number + 1, leads, months) - first_lead
        first = sheets.to_serial(pd.Timestamp(f"{title[6:]}-10T06:00:00Z"))
        rows = [columns] + [
            [f"u{i:07d}", f"Buyer {i}", "+919876543210", "3BHK", "High", "Yes", "No", 1, 3, first,
             first + 0.5, "", updated]
            for i in range(first_lead, first_lead + count)
        ]  # fmt: skip
        sheet_id = 1000 + number
        grid = {"sheetId": sheet_id, "startRowIndex": 0, "startColumnIndex": 0, "endColumnIndex": len(columns)}
        books[home].append(
            Sheet(
                {"sheetId": sheet_id, "title": title, "index": len(books[home]) + 1, "sheetType": "GRID",
                 "gridProperties": {"rowCount": count + 1, "columnCount": len(columns), "frozenRowCount": 1}},
                rows,
                basic_filter={"range": grid},
                protected_ranges=[{"protectedRangeId": sheet_id, "range": grid,
                                   "description": PROTECTED_DESCRIPTION, "warningOnly": True}],
            )
        )  # fmt: skip
        entries += [
            {"_id": f"u{i:07d}", "tab": title, "row": i - first_lead + 2, "version": updated}
            for i in range(first_lead, first_lead + count)
        ]
        tab_docs.append({"_id": f"{LEADS_ROW_INDEX}|{title}", "index": LEADS_ROW_INDEX, "tab": title,
                         "spreadsheet": home, "sheet_id": sheet_id, "next_row": count + 2})  # fmt: skip
    earlier_rows = [EARLIER_HEADER, ["Leads (earlier)", EARLIER, f"https://docs.google.com/spreadsheets/d/{EARLIER}",
                                     "2026-07-01 00:00 UTC"]]  # fmt: skip
    listing = Sheet({"sheetId": 1, "title": EARLIER_TAB, "index": 0, "sheetType": "GRID",
                     "gridProperties": {"rowCount": 2, "columnCount": 4}}, earlier_rows)  # fmt: skip
    for spreadsheet_id, tabs in books.items():
        first_tab = [listing] if spreadsheet_id == CURRENT else []
        properties = {"title": spreadsheet_id, "locale": "en_US", "timeZone": "Asia/Kolkata"}
        server.seed(Spreadsheet(spreadsheet_id, properties, first_tab + tabs))
    db[LEADS_ROW_INDEX].drop()
    db[TABS].drop()
    for start in range(0, len(entries), 50_000):
        db[LEADS_ROW_INDEX].insert_many(entries[start : start + 50_000], ordered=False)
    db[TABS].insert_many(tab_docs)
    from leadflow.mongo_indexes import ensure_indexes

    ensure_indexes(db)


def touched(
    leads: int, months: int, count: int, columns: list[str], read_at: pd.Timestamp, hour: int = 0
) -> pd.DataFrame:
    """80 % leads of the latest month, 10 % old leads spread over the older months, 10 % new
    (new to this ``hour``); each hour a different sample of the existing ones."""
    latest = range(first_lead_of(months - 1, leads, months), leads)
    recent = list(latest[hour :: max(len(latest) // int(count * 0.8), 1)][: int(count * 0.8)])
    older = range(0, latest[0])
    old = list(older[hour :: max(len(older) // int(count * 0.1), 1)][: int(count * 0.1)])
    new = [f"n{hour}-{i:07d}" for i in range(count - len(recent) - len(old))]
    titles = month_titles(months)

    def first(key: str) -> pd.Timestamp:
        number = months - 1 if key.startswith("n") else lead_month(int(key[1:]), leads, months)
        return pd.Timestamp(f"{titles[number][6:]}-10T06:00:00Z")

    keys = [f"u{i:07d}" for i in recent + old] + new
    return pd.DataFrame({
        "User ID": keys, "Name": [f"Buyer {k}" for k in keys], "Mobile": ["+919876543210"] * len(keys),
        "Config": ["3BHK"] * len(keys), "Rank": ["High"] * len(keys), "Chat History": ["Yes"] * len(keys),
        "Visit Scheduled": ["No"] * len(keys), "Sessions": [2] * len(keys), "Messages": [5] * len(keys),
        "First Interaction": [first(k) for k in keys],
        "Last Interaction": [read_at - pd.Timedelta(minutes=5)] * len(keys),
        "Visit Status": [""] * len(keys), "Updated": [read_at] * len(keys),
    })[columns]  # fmt: skip


def one_run(server: SheetsServer, index: Any, frame: pd.DataFrame) -> dict[str, Any]:
    from leadflow.reports import sheets_api
    from leadflow.reports.pipeline import SPECS, SPREADSHEET_VARIABLES
    from leadflow.reports.rollover import ROLLOVER_VARIABLES, Destination, write_report

    destination = Destination("consolidated", SPREADSHEET_VARIABLES["consolidated"],
                              ROLLOVER_VARIABLES["consolidated"], None, [], "reader")  # fmt: skip
    client = sheets_api.SheetsClient()
    before = len(clients.calls(server.base_url))
    started, cpu = time.perf_counter(), time.process_time()
    result, _room, earlier = write_report(client, SPECS["consolidated"], destination, CURRENT, frame, index)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    log = clients.calls(server.base_url)[before:]
    results = [result.as_dict(), *earlier.values()]
    return {
        "calls": len(log),
        "bytes_sent": sum(c["request_bytes"] for c in log),
        "bytes_received": sum(c["response_bytes"] for c in log),
        "seconds": seconds,
        "sheets_seconds": client.seconds,
        "cpu_seconds": cpu,  # this process: the client, pandas and the in-process stand-in (not MongoDB)
        "rebuilds": sum(r["index_rebuilds"] for r in results),
        "written": sum(r["rows_updated"] + r["rows_added"] for r in results),
    }


def resort_latest(server: SheetsServer, months: int) -> None:
    """What a person does with the plain sort (not a filter view): every row of the tab moves."""
    sheet_id = 1000 + months - 1
    request = {"sortRange": {"range": {"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": 0},
                             "sortSpecs": [{"dimensionIndex": 1, "sortOrder": "DESCENDING"}]}}  # fmt: skip
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build

    service = build("sheets", "v4", credentials=AnonymousCredentials(), cache_discovery=False,
                    client_options={"api_endpoint": server.base_url})  # fmt: skip
    service.spreadsheets().batchUpdate(spreadsheetId=CURRENT, body={"requests": [request]}).execute()


def measure(db: Any, leads: int, months: int, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from leadflow.reports.pipeline import SPECS
    from leadflow.reports.row_index import LEADS_ROW_INDEX, RowIndex

    spec = SPECS["consolidated"]
    server = SheetsServer()  # in memory: the figures are the client's and Google's side, not the disk's
    serve_in_thread(server)
    try:
        clients.set_settings(server.base_url, quota=None, caller="user")
        seed(server, db, leads, months, spec.columns)
        # The stand-in runs in this process: without this, Python's full garbage collections would
        # walk its million seeded rows, a cost Google's servers do not put on the client.
        gc.collect()
        gc.freeze()
        conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": server.base_url}})
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = conn
        index = RowIndex(db, LEADS_ROW_INDEX)
        # Three hours, each its own sample of leads: the median of each timing (the machine is shared).
        hours = [
            one_run(server, index, touched(leads, months, count, spec.columns, READ_AT + pd.Timedelta(hours=h), h))
            for h in range(1, 4)
        ]
        hour = {**hours[0], **{k: statistics.median(h[k] for h in hours) for k in TIMINGS}}
        resort_latest(server, months)
        later = READ_AT + pd.Timedelta(hours=4)
        resorted = one_run(server, index, touched(leads, months, count, spec.columns, later, 4))
    finally:
        server.stop()
        gc.unfreeze()
    return hour, resorted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sheets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", default="100000,500000,1000000", help="leads in the sheets, comma-separated")
    parser.add_argument("--touched", type=int, default=1000, help="leads one run writes")
    parser.add_argument("--months", type=int, default=24, help="lead tabs the leads are spread over")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-sheets-"))
    from devstack.airflow_home import airflow_env

    os.environ.update(airflow_env(tmp / "airflow"))  # Variables resolve outside a task (defaults here)
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    import pymongo

    from devstack.services import running_stack

    try:
        with (
            running_stack(tmp / "stack", mongo_standalone=True) as stack,
            pymongo.MongoClient(stack.mongo_uri) as mongo,
        ):
            db = mongo.leadflow
            print(f"One hour's consolidated write of {args.touched:,} leads (80 % recent, 10 % old, 10 % new), "
                  f"13 columns, leads over {args.months} month tabs in two spreadsheets:")  # fmt: skip
            header = (f"{'leads':>10} {'run':>10} {'calls':>6} {'bytes sent':>11} {'bytes recv':>11} "
                      f"{'Sheets s':>9} {'CPU s':>6} {'total s':>8} {'tabs read whole':>16}")  # fmt: skip
            print(header, flush=True)
            hours = []
            for size in (int(s) for s in args.sizes.split(",")):
                hour, resorted = measure(db, size, args.months, args.touched)
                hours.append(hour)
                for name, row in (("hour", hour), ("re-sorted", resorted)):
                    print(f"{size:>10,} {name:>10} {row['calls']:>6} {row['bytes_sent']:>11,} "
                          f"{row['bytes_received']:>11,} {row['sheets_seconds']:>9.2f} {row['cpu_seconds']:>6.2f} "
                          f"{row['seconds']:>8.2f} "
                          f"{row['rebuilds']:>16}",
                          flush=True)  # fmt: skip
            ratios = {
                key: max(h[key] for h in hours) / max(min(h[key] for h in hours), 1e-9)
                for key in ("calls", "bytes_sent", "bytes_received", *TIMINGS)
            }
            figures = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
            print(f"max/min across sizes (hour runs; timings: median of 3 hours): {figures}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
