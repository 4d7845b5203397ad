"""The steps of ``interaction_reports``, as plain functions the DAG's tasks call.

Between steps only object-store paths, ids and counts travel (through XCom); the frames live
under the run's folder (see leadflow.objectstore).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from leadflow.config import (
    DEFAULT_LOOKBACK_MINUTES,
    VAR_CONSOLIDATED_SPREADSHEET,
    VAR_REPORT_LOOKBACK_MINUTES,
    VAR_SESSION_SPREADSHEET,
    VAR_SHARE_WITH,
)
from leadflow.objectstore import read_frame, run_folder, write_frame
from leadflow.reports.dashboard import ensure_dashboard
from leadflow.reports.extract import extract
from leadflow.reports.rollover import ROLLOVER_VARIABLES, Destination, write_report
from leadflow.reports.row_index import LEADS_ROW_INDEX, RowIndex
from leadflow.reports.sheets import ReportSpec
from leadflow.reports.sheets_api import SheetsClient
from leadflow.reports.transform import (
    CONSOLIDATED_COLUMNS,
    DATETIME_COLUMNS,
    INTERACTION_FIELDS,
    SESSION_COLUMNS,
    UPDATED,
    USER_FIELDS,
    consolidated_report,
    session_report,
    stamped,
)
from leadflow.reports.watermark import changes_since
from leadflow.reports.window import IST, ReportWindow
from leadflow.timefmt import ist

log = logging.getLogger(__name__)
ReportKind = Literal["sessions", "consolidated"]


def _month_tab(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["Session Start"], utc=True).dt.tz_convert(IST).dt.strftime("%Y-%m")


def _is_month_tab(title: str) -> bool:
    return len(title) == 7 and title[4] == "-" and title.replace("-", "").isdigit()


LEADS_TAB_PREFIX = "Leads "
LEGACY_LEADS_TAB = "Leads"  # the one tab of before the month tabs: its leads move out as they are written


def _lead_month_tab(frame: pd.DataFrame) -> pd.Series:
    """``Leads YYYY-MM``: the IST month of the lead's first interaction (a lead without one, which
    the extract does not produce but a hand-made frame may: the month its row was read)."""
    first = pd.to_datetime(frame["First Interaction"], utc=True)
    month = first.fillna(pd.to_datetime(frame[UPDATED], utc=True))
    return LEADS_TAB_PREFIX + month.dt.tz_convert(IST).dt.strftime("%Y-%m")


def _is_lead_tab(title: str) -> bool:
    return title == LEGACY_LEADS_TAB or (title.startswith(LEADS_TAB_PREFIX) and _is_month_tab(title[6:]))


SPECS: dict[ReportKind, ReportSpec] = {
    "sessions": ReportSpec(
        title="Leadflow — Session-wise report",
        key="Session ID",
        columns=[*SESSION_COLUMNS, UPDATED],
        datetime_columns=frozenset(DATETIME_COLUMNS & {*SESSION_COLUMNS, UPDATED}),
        sort_by=[("Session Start", True)],
        tab_of=_month_tab,
        is_report_tab=_is_month_tab,
    ),
    "consolidated": ReportSpec(
        title="Leadflow — Consolidated report",
        key="User ID",
        columns=[*CONSOLIDATED_COLUMNS, UPDATED],
        datetime_columns=frozenset(DATETIME_COLUMNS & {*CONSOLIDATED_COLUMNS, UPDATED}),
        sort_by=[("Last Interaction", False)],  # a new tab's first rows only: lead tabs are not sorted after
        tab_of=_lead_month_tab,
        is_report_tab=_is_lead_tab,
        row_index=LEADS_ROW_INDEX,
    ),
}
SPREADSHEET_VARIABLES: dict[ReportKind, str] = {
    "sessions": VAR_SESSION_SPREADSHEET,
    "consolidated": VAR_CONSOLIDATED_SPREADSHEET,
}


def lookback_minutes() -> int:
    from airflow.sdk import Variable

    raw = Variable.get(VAR_REPORT_LOOKBACK_MINUTES, default=str(DEFAULT_LOOKBACK_MINUTES))
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"Variable {VAR_REPORT_LOOKBACK_MINUTES} must be whole minutes, got {raw!r}") from error


def extract_step(dag_id: str, run_id: str, window: ReportWindow) -> dict[str, Any]:
    from leadflow.mongo import get_database

    db = get_database()
    # The overlap that lets a late write into a report window be seen also covers the writes
    # that become visible a little after their _id / updated_at time (see leadflow.reports.watermark).
    since = changes_since(db, timedelta(minutes=lookback_minutes()))
    # Taken before the first query: every row is at least as fresh as this (see UPDATED), and the
    # next run's change scan starts from it once this run has landed.
    read_at = datetime.now(UTC)
    extracted = extract(db, window.start, window.end, changed_since=since)
    folder = run_folder(dag_id, run_id)
    touched = pd.DataFrame({"session_id": pd.Series(extracted.touched_sessions, dtype="object")})
    touched_users = pd.DataFrame({"user_id": pd.Series(extracted.touched_users, dtype="object")})
    result = {
        "folder": str(folder),
        "interactions": write_frame(extracted.interactions, folder / "interactions.parquet"),
        "users": write_frame(extracted.users, folder / "users.parquet"),
        "touched_sessions_path": write_frame(touched, folder / "touched_sessions.parquet"),
        "touched_users_path": write_frame(touched_users, folder / "touched_users.parquet"),
        "window": window.as_dict(),
        "read_at": read_at.isoformat(),
        "window_interactions": extracted.window_interactions,
        "changed_since": since.isoformat() if since else None,
        "changed_interactions": extracted.changed_interactions,
        "changed_users": extracted.changed_users,
        "touched_sessions": len(extracted.touched_sessions),
        "touched_users": len(extracted.touched_users),
        "interactions_read": len(extracted.interactions),
    }
    log.info(
        "Window %s → %s: %d interactions; changed since %s: %d interactions, %d profiles; "
        "%d touched sessions, %d touched users",
        ist(window.start), ist(window.end), extracted.window_interactions,
        ist(since) if since else "(first run: window only)", extracted.changed_interactions,
        extracted.changed_users, len(extracted.touched_sessions), len(extracted.touched_users),
    )  # fmt: skip
    return result


def transform_step(kind: ReportKind, extracted: dict[str, Any]) -> dict[str, Any]:
    interactions = read_frame(extracted["interactions"], ["timestamp"], INTERACTION_FIELDS)
    users = read_frame(extracted["users"], ["site_visit_scheduled_at"], USER_FIELDS)
    if kind == "sessions":
        touched = read_frame(extracted["touched_sessions_path"], columns=["session_id"])["session_id"]
        report, dq = session_report(interactions, users, touched.astype(str))
    else:
        touched = read_frame(extracted["touched_users_path"], columns=["user_id"])["user_id"]
        report, dq = consolidated_report(interactions, users, touched.astype(str))
    report = stamped(report, datetime.fromisoformat(extracted["read_at"]), dq, SPECS[kind].key)
    path = write_frame(report, run_folder_of(extracted) / f"{kind}_report.parquet")
    if dq.total:
        log.warning("Data quality (%s report): %s; examples: %s", kind, dq.counts(), dq.examples)
    else:
        log.info("Data quality (%s report): clean", kind)
    return {"path": path, "rows": len(report), "data_quality": dq.counts()}


def run_folder_of(extracted: dict[str, Any]):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(extracted["folder"])


VAR_DRIVE_FOLDER = "leadflow_report_drive_folder_id"
VAR_SHARE_ROLE = "leadflow_report_share_role"
SHARE_ROLES = ("reader", "commenter", "writer")
DEFAULT_SHARE_ROLE = "reader"


def share_role() -> str:
    from airflow.sdk import Variable

    role = Variable.get(VAR_SHARE_ROLE, default=DEFAULT_SHARE_ROLE)
    if role not in SHARE_ROLES:
        raise ValueError(f"Variable {VAR_SHARE_ROLE} must be one of {SHARE_ROLES}, got {role!r}")
    return role


def ensure_spreadsheet(client: SheetsClient, kind: ReportKind, first_tabs: list[str]) -> str:
    """The report's spreadsheet id, shared with the team; created (in the Drive folder) if unset.

    The id goes into its Variable the moment the create returns, before anything else can fail,
    so a retry finds it and never creates a second spreadsheet; sharing is idempotent and runs on
    every load, so a share that failed is completed by the retry (and new addresses are added).
    """
    from airflow.sdk import Variable

    variable = SPREADSHEET_VARIABLES[kind]
    role = share_role()
    share_with = json.loads(Variable.get(VAR_SHARE_WITH, default="[]"))
    spreadsheet_id = Variable.get(variable, default=None)
    if not spreadsheet_id:
        spreadsheet_id = client.create_spreadsheet(SPECS[kind].title, Variable.get(VAR_DRIVE_FOLDER, default=None))
        Variable.set(variable, spreadsheet_id)
        log.info("Created spreadsheet %s for the %s report", spreadsheet_id, kind)
        client.name_first_tab(spreadsheet_id, (first_tabs or [LEGACY_LEADS_TAB])[0], len(SPECS[kind].columns))
    added = client.share(spreadsheet_id, share_with, role)
    if added:
        log.info("Shared the %s report with %d more people as %s", kind, added, role)
    return spreadsheet_id


def load_step(kind: ReportKind, transformed: dict[str, Any], rebuild_dashboard: bool = False) -> dict[str, Any]:
    spec = SPECS[kind]
    report = read_frame(transformed["path"], sorted(spec.datetime_columns), spec.columns)
    client = SheetsClient()
    tabs = sorted(set(spec.tab_of(report))) if len(report) else []
    spreadsheet_id = ensure_spreadsheet(client, kind, tabs)
    index = None
    if spec.row_index is not None:
        from leadflow.mongo import get_database

        index = RowIndex(get_database(), spec.row_index)
    result, room, earlier = write_report(client, spec, destination(kind), spreadsheet_id, report, index)
    log.info("%s report upserted: %s; into earlier spreadsheets: %s", kind, result.as_dict(), earlier or "none")
    dashboard = ensure_dashboard(client, kind, result, spec, rebuild_dashboard)
    return {**result.as_dict(), "rollover": room.rollover, "dashboard": dashboard, "earlier_spreadsheets": earlier}


def destination(kind: ReportKind) -> Destination:
    """Where a rollover creates the report's next spreadsheet: as ``ensure_spreadsheet`` does."""
    from airflow.sdk import Variable

    return Destination(
        kind=kind,
        spreadsheet_variable=SPREADSHEET_VARIABLES[kind],
        rollover_variable=ROLLOVER_VARIABLES[kind],
        folder_id=Variable.get(VAR_DRIVE_FOLDER, default=None),
        share_with=json.loads(Variable.get(VAR_SHARE_WITH, default="[]")),
        role=share_role(),
    )
