"""Sheets-side cost of one hourly ``Leads`` upsert against the size of the tab.

    python -m bench.sheets [--sizes 25000,50000,100000] [--touched 1000]

For each size, a spreadsheet whose ``Leads`` tab already holds that many leads (13 columns, as
the consolidated report writes them) is written straight into a fresh Sheets stand-in's data
folder (seeding a million rows through the API would take longer than the run being measured),
the stand-in is started on it, and one upsert of ``--touched`` leads (90 % existing ones spread
over the tab, 10 % new) runs through the real client. Printed per size: Sheets calls, bytes
sent and received (the stand-in's own call log), and seconds for the upsert. Calls and bytes
are what Google would see; the seconds are mostly the stand-in's (it copies and saves the whole
spreadsheet on every write, ~1 minute per write at 300 k leads, past the client's timeout, so
larger sizes measure the stand-in, not the design).

What it shows today: the upsert reads the whole ``Leads`` key and ``Updated`` columns, so bytes
read and seconds grow with the tab, not with the touched rows, and 1 M leads x 13 columns is
past Google's 10 M-cell workbook limit (the stand-in refuses the write as Google would). See
docs/sheets-at-scale.md for the design that keeps the per-run cost flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pandas as pd

from devstack import clients
from devstack.services import free_port

WIDTH_NOTE = "13 columns"
SPREADSHEET_ID = "bench-leads"


def seed(data_dir: Path, leads: int, columns: list[str], updated_serial: float) -> None:
    """The stand-in's stored form of a spreadsheet with a ``Leads`` tab of ``leads`` rows."""
    rows = [columns] + [
        [f"u{i:07d}", f"Buyer {i}", "+919876543210", "3BHK", "High", "Yes", "No", 1, 3,
         46000.5, 46001.5 - i / 1e6, "", updated_serial]
        for i in range(leads)
    ]  # fmt: skip
    sheet = {
        "properties": {"sheetId": 7, "title": "Leads", "index": 0, "sheetType": "GRID",
                       "gridProperties": {"rowCount": leads + 1, "columnCount": len(columns)}},
        "rows": rows,
    }  # fmt: skip
    book = {"spreadsheetId": SPREADSHEET_ID, "properties": {"title": "bench", "locale": "en_US"}, "sheets": [sheet]}
    (data_dir / f"{SPREADSHEET_ID}.json").write_text(json.dumps(book, separators=(",", ":")))


def touched(leads: int, count: int, columns: list[str]) -> pd.DataFrame:
    existing = [f"u{i:07d}" for i in range(0, leads, max(leads // int(count * 0.9), 1))][: int(count * 0.9)]
    new = [f"n{i:07d}" for i in range(count - len(existing))]
    read_at = pd.Timestamp("2027-01-01T05:30:00Z")
    keys = existing + new
    return pd.DataFrame({
        "User ID": keys, "Name": [f"Buyer {k}" for k in keys], "Mobile": ["+919876543210"] * len(keys),
        "Config": ["3BHK"] * len(keys), "Rank": ["High"] * len(keys), "Chat History": ["Yes"] * len(keys),
        "Visit Scheduled": ["No"] * len(keys), "Sessions": [2] * len(keys), "Messages": [5] * len(keys),
        "First Interaction": [read_at - pd.Timedelta(days=30)] * len(keys),
        "Last Interaction": [read_at - pd.Timedelta(minutes=5)] * len(keys),
        "Visit Status": [""] * len(keys), "Updated": [read_at] * len(keys),
    })[columns]  # fmt: skip


def measure(leads: int, count: int) -> dict[str, object]:
    from leadflow.reports import sheets, sheets_api
    from leadflow.reports.pipeline import SPECS

    spec = SPECS["consolidated"]
    with tempfile.TemporaryDirectory(prefix="bench-sheets-") as folder:
        data_dir = Path(folder)
        seed(data_dir, leads, spec.columns, sheets.to_serial(pd.Timestamp("2026-12-01T00:00:00Z")))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "devstack.sheets_server", "--port", str(port), "--data-dir", folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            clients.wait_healthy(url, timeout=600)
            clients.set_settings(url, quota=None)
            conn = json.dumps({"conn_type": "google_cloud_platform", "extra": {"api_endpoint": url}})
            with mock.patch.dict(os.environ, {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": conn}):
                client = sheets_api.SheetsClient()
                frame = touched(leads, count, spec.columns)
                started = time.perf_counter()
                try:
                    result = sheets.upsert(client, SPREADSHEET_ID, frame, spec)
                    outcome = f"{result.rows_updated} updated, {result.rows_added} added"
                except Exception as error:  # the refusal itself is the figure to print
                    outcome = f"refused: {str(error)[-160:]}"
                seconds = time.perf_counter() - started
            log = clients.calls(url)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "leads": leads,
        "calls": len(log),
        "bytes_sent": sum(c["request_bytes"] for c in log),
        "bytes_received": sum(c["response_bytes"] for c in log),
        "seconds": round(seconds, 2),
        "outcome": outcome,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sheets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", default="25000,50000,100000", help="leads already in the tab, comma-separated")
    parser.add_argument("--touched", type=int, default=1000, help="leads one run writes")
    args = parser.parse_args(argv)
    print(f"One Leads upsert of {args.touched} leads (90 % existing, 10 % new), {WIDTH_NOTE}:")
    print(f"{'leads in tab':>12} {'calls':>6} {'bytes sent':>11} {'bytes recv':>11} {'seconds':>8}  outcome")
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.touched)
        print(f"{row['leads']:>12,} {row['calls']:>6} {row['bytes_sent']:>11,} {row['bytes_received']:>11,} "
              f"{row['seconds']:>8}  {row['outcome']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
