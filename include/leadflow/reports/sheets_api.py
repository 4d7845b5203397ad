"""The Google side of the reports: the client for the ``google_cloud_default`` connection, and
what one read of a spreadsheet's tab list tells (ids, filters, our protection, cells used).

Also the A1-notation helpers every request builder shares.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from leadflow.config import GOOGLE_CONN_ID

SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
NEW_TAB_ROWS = 1000
PROTECTED_DESCRIPTION = "leadflow: written every hour by the interaction_reports DAG"
# What the google_cloud_default connection's extra ``scope`` must grant. ``drive``, not
# ``drive.file``: drive.file reaches only files this app created or was handed, so creating a
# spreadsheet in the team's shared-drive folder (which a person made) and sharing a spreadsheet
# someone pre-set in the Variable both fail with 404 "File not found".
SCOPES = ("https://www.googleapis.com/auth/spreadsheets", "https://www.googleapis.com/auth/drive")


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
        missing = [scope for scope in SCOPES if scope not in hook.scopes]
        if missing and not endpoint:  # else the first call fails with a bare 403
            raise ValueError(
                f"Connection {conn_id}: extra 'scope' must include {', '.join(missing)} "
                f"(it grants {', '.join(hook.scopes)}); set it to {','.join(SCOPES)}"
            )
        credentials = AnonymousCredentials() if endpoint else hook.get_credentials()
        options = hook.get_client_options(endpoint)
        self.sheets = build("sheets", "v4", credentials=credentials, client_options=options, cache_discovery=False)
        self.drive = build("drive", "v3", credentials=credentials, client_options=options, cache_discovery=False)
        # Building a resource walks the discovery document (~50 ms, ~20 MB): build each once.
        self.spreadsheets = self.sheets.spreadsheets()
        self.values = self.spreadsheets.values()
        self.num_retries = hook.num_retries
        self.calls: Counter[str] = Counter()
        self.seconds = 0.0  # spent in Sheets and Drive calls, retries included (bench.sheets prints it)

    def execute(self, request: Any, kind: str) -> dict[str, Any]:
        self.calls[kind] += 1
        self.calls["request_bytes"] += len(request.body or b"")
        started = time.perf_counter()
        try:
            return request.execute(num_retries=self.num_retries)
        finally:
            self.seconds += time.perf_counter() - started

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
class Tab:
    sheet_id: int
    has_filter: bool = False
    protected: bool = False
    cells: int = 0  # rowCount x columnCount: what Google counts against the workbook's cell limit
    row_count: int = NEW_TAB_ROWS


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
            row_count=int(grid.get("rowCount", 0)),
        )
    return tabs
