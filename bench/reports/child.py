"""What every benchmark child shares: the job it is given, its set-up and its figures."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.reports.measure import RssSampler, Stages, proc_status_mb, ru_maxrss_mb, sheets_client

SHARED_DRIVE_FOLDER = "local-shared-drive-folder"  # the Sheets stand-in's
REPORTS = ("sessions", "consolidated")
DAG_ID, RUN_ID = "interaction_reports", "bench__2026-11-20T15:30:00+00:00"
HTTP_TIMEOUT_S = 900  # googleapiclient's default 60 s socket timeout is too short for the big writes


@dataclass(frozen=True)
class Job:
    mongo_uri: str
    sheets_url: str
    mongo_pid: int
    sheets_pid: int
    window_start: datetime
    window_end: datetime
    ours_keys: dict[str, list[str]] = field(default_factory=dict)
    scale_probe: bool = True


def prepare_child(sheets: bool) -> tuple[RssSampler, Any]:
    """Imports (and the Sheets client) before the baseline RSS is taken.

    googleapiclient builds a resource's methods, with docstrings pretty-printed from the
    discovery document, on first use: so the requests the paths use are built (not sent) here.
    """
    socket.setdefaulttimeout(HTTP_TIMEOUT_S)
    # The steps log their data-quality counts as warnings; the summary prints them instead.
    logging.getLogger("leadflow").setLevel(logging.ERROR)
    import pandas  # noqa: F401
    import pymongo  # noqa: F401
    from airflow.providers.mongo.hooks.mongo import MongoHook  # noqa: F401

    import leadflow.mongo
    import leadflow.objectstore
    import leadflow.reports.extract
    import leadflow.reports.pipeline
    import leadflow.reports.transform  # noqa: F401

    client = None
    if sheets:
        client = sheets_client()
        spreadsheets = client.sheets.spreadsheets()
        spreadsheets.create(body={})
        spreadsheets.get(spreadsheetId="warm-up")
        spreadsheets.batchUpdate(spreadsheetId="warm-up", body={})
        values = spreadsheets.values()
        values.batchGet(spreadsheetId="warm-up", ranges=["A1"])
        values.batchUpdate(spreadsheetId="warm-up", body={})
        values.clear(spreadsheetId="warm-up", range="A1", body={})
        values.update(spreadsheetId="warm-up", range="A1", body={}, valueInputOption="RAW")
    return RssSampler(), client


def task_figures(task: str, stages: Stages, baseline: float) -> dict[str, Any]:
    items = sorted(stages.items, key=lambda s: s.name.startswith("task total"))  # totals last
    return {
        "task": task,
        "stages": [s.__dict__ for s in items],
        "baseline_mb": baseline,
        "peak_mb": proc_status_mb()["VmHWM"],
        "ru_maxrss_mb": ru_maxrss_mb(),
    }


def new_spreadsheet(client: Any, title: str, tabs: list[str], width: int) -> str:
    """What a first run does: create in the shared-drive folder, then the report's tabs."""
    from leadflow.reports.sheets_api import new_tab_properties

    spreadsheet_id = client.create_spreadsheet(title, SHARED_DRIVE_FOLDER)
    requests = [{"addSheet": {"properties": new_tab_properties(tab, width)}} for tab in tabs]
    if requests:
        body = {"requests": requests}
        client.execute(client.spreadsheets.batchUpdate(spreadsheetId=spreadsheet_id, body=body), "writes")
    return spreadsheet_id


