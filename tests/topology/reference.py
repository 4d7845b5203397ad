"""The topology test's expected sheets: what on-time ``dag.test()`` runs of the fixture write.

Run as a subprocess of the test (``python -m tests.topology.reference``), in the test session's
Airflow environment and against its stand-in stack, so that it runs while the topology starts
instead of before it: the two together take the time of the longer one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack.services import Stack
from tests.helpers import REPO, all_spreadsheets, load_dag
from tests.reports.test_dag import LEADS_TITLE, SESSION_TITLE, run_hours

REPORT = "interaction_reports"
FIXTURE_MONTH = "2026-11"
LIVE_USER = "live-user"


def report_rows(sheets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fixture's rows: the session report's November tab, the consolidated report's leads
    but the live run's user (tab positions differ: the live run creates the spreadsheets).
    Through JSON, as the subprocess hands them over."""
    sessions = sheets[SESSION_TITLE][FIXTURE_MONTH]
    leads = sheets[LEADS_TITLE][f"Leads {FIXTURE_MONTH}"]
    rows = {
        "sessions": {k: v for k, v in sessions.items() if k != "index"},
        # Lead rows stay where they were first written: in key order, as runs in another order
        # write them in another order.
        "leads": sorted((row for row in leads["rows"][1:] if LIVE_USER not in row), key=lambda row: str(row[0])),
        "leads_layout": {k: v for k, v in leads.items() if k not in ("index", "rows")},
    }
    return json.loads(json.dumps(rows))


class OnTimeRuns:
    """The reference runs, in a subprocess; ``sheets`` waits for them and gives what they wrote."""

    def __init__(self, proc: subprocess.Popen, out: Path) -> None:
        self.proc, self.out = proc, out

    def sheets(self, timeout: float) -> dict[str, Any]:
        if self.proc.wait(timeout=timeout) != 0:
            log = self.out.with_suffix(".log").read_text()[-5000:]
            raise AssertionError(f"the reference runs failed ({self.proc.returncode}):\n{log}")
        return json.loads(self.out.read_text())


@contextlib.contextmanager
def on_time_runs(stack: Stack, hours: list[datetime], out: Path) -> Iterator[OnTimeRuns]:
    """The on-time runs of ``hours``, started; killed at the end of the block if still running."""
    command = [sys.executable, "-m", "tests.topology.reference", "--state-dir", str(stack.state_dir),
               "--out", str(out), *(hour.isoformat() for hour in hours)]  # fmt: skip
    with out.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield OnTimeRuns(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("hours", nargs="+", type=datetime.fromisoformat)
    args = parser.parse_args(argv)
    run_hours(load_dag(REPORT), args.hours)
    args.out.write_text(json.dumps(report_rows(read_within_quota(Stack.load(args.state_dir)))))


def read_within_quota(stack: Stack) -> dict[str, Any]:
    """The sheets, read once the runs' reads leave room in the stand-in's per-minute read quota
    (Google's 60 a minute a user: a day of runs in a minute uses it up)."""
    from googleapiclient.errors import HttpError

    for _ in range(3):
        try:
            return all_spreadsheets(stack)
        except HttpError as error:
            if error.resp.status != 429:
                raise
            time.sleep(30)
    return all_spreadsheets(stack)


if __name__ == "__main__":
    main()
