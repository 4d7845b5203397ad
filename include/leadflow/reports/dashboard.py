"""The sales dashboard: a ``Dashboard`` tab that Google Sheets keeps up to date by itself.

Pivot tables and charts are evaluated by Sheets from their source ranges, so once the tab exists
it costs no API call per run: the hourly upsert only writes rows, and every source range is
open-ended (no end row), so the pivots grow with it. The tab is built by the first run that does
not find it (one extra ``batchUpdate``), then left alone so a person can move or restyle it;
``rebuild_dashboard`` on a run deletes and builds it again.

A pivot table can only read its own spreadsheet, and the two reports live in two spreadsheets,
so each gets a dashboard over its own data:

* consolidated report — the funnel (leads → chatted in the last 7 days → visit scheduled or
  done → visit completed) and leads by Rank × Visit Scheduled with a stacked bar chart, over the
  latest ``Leads YYYY-MM`` tab (the leads who first chatted that month), re-pointed when a newer
  one is added; conditional formatting on every lead tab (High rank, Visit Scheduled = Yes),
  added with the tab;
* session-wise report — sessions per day, by detected intent and by hour of the day, over the
  latest month tab, each with a chart. When a run adds a newer month tab the pivots are pointed
  at it (one ``batchUpdate`` on that run, once a month).

The dashboard tab has a fixed sheet id, so it is found (without a read) in the tab list the
upsert reads anyway, even after someone renames it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from leadflow.config import REPORT_TIMEZONE
from leadflow.reports.transform import CONSOLIDATED_COLUMNS, SESSION_COLUMNS

if TYPE_CHECKING:
    from leadflow.reports.sheets import ReportSpec, UpsertResult
    from leadflow.reports.sheets_api import SheetsClient

log = logging.getLogger(__name__)

Kind = Literal["sessions", "consolidated"]
Action = Literal["build", "rebuild", "repoint"]

DASHBOARD_TITLE = "Dashboard"
# Fixed ids (Google accepts a caller-chosen sheetId/chartId): found again without a read.
DASHBOARD_SHEET_ID: dict[Kind, int] = {"consolidated": 1_100_000_001, "sessions": 1_100_000_002}
CHART_ID_BASE: dict[Kind, int] = {"consolidated": 1_100_000_100, "sessions": 1_100_000_200}
DASHBOARD_ROWS, DASHBOARD_COLUMNS = 120, 26

HEADING = {"textFormat": {"bold": True, "fontSize": 14}}
BOLD = {"textFormat": {"bold": True}}
NOTE = {"textFormat": {"italic": True, "foregroundColorStyle": {"rgbColor": {"red": 0.4, "green": 0.4, "blue": 0.4}}}}
HIGH_RANK_FORMAT = {
    "backgroundColorStyle": {"rgbColor": {"red": 0.99, "green": 0.85, "blue": 0.8}},
    "textFormat": {"bold": True, "foregroundColorStyle": {"rgbColor": {"red": 0.65, "green": 0.1, "blue": 0.05}}},
}
VISIT_FORMAT = {
    "backgroundColorStyle": {"rgbColor": {"red": 0.8, "green": 0.93, "blue": 0.8}},
    "textFormat": {"bold": True, "foregroundColorStyle": {"rgbColor": {"red": 0.05, "green": 0.4, "blue": 0.1}}},
}
SERIES_COLOURS = [
    {"rgbColor": {"red": 0.26, "green": 0.52, "blue": 0.96}},
    {"rgbColor": {"red": 0.2, "green": 0.66, "blue": 0.33}},
]


@dataclass(frozen=True)
class DashboardPlan:
    """What a run does to the dashboard: nothing (``action`` None), or one ``batchUpdate``."""

    action: Action | None
    requests: list[dict[str, Any]]
    # Only a rebuild reads: the Leads rules to delete, so they are not added twice.
    needs_rule_read: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "requests": len(self.requests)}


def _col(columns: Sequence[str], name: str) -> int:
    return columns.index(name)


def _grid(sheet_id: int, row: int, col: int, end_row: int | None = None, end_col: int | None = None) -> dict:
    rng: dict[str, Any] = {"sheetId": sheet_id, "startRowIndex": row, "startColumnIndex": col}
    if end_row is not None:
        rng["endRowIndex"] = end_row
    if end_col is not None:
        rng["endColumnIndex"] = end_col
    return rng


def _open_column(sheet_id: int, first_row: int, col: int) -> dict[str, Any]:
    """One column from ``first_row`` down, without an end: grows with the pivot above it."""
    return {"sourceRange": {"sources": [_grid(sheet_id, first_row, col, end_col=col + 1)]}}


def _text_cells(sheet_id: int, row: int, col: int, texts: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        "updateCells": {
            "start": {"sheetId": sheet_id, "rowIndex": row, "columnIndex": col},
            "rows": [
                {"values": [{"userEnteredValue": {"stringValue": text}, "userEnteredFormat": fmt}]}
                for text, fmt in texts
            ],
            "fields": "userEnteredValue,userEnteredFormat",
        }
    }


def _pivot_cell(sheet_id: int, row: int, col: int, pivot: dict[str, Any]) -> dict[str, Any]:
    return {
        "updateCells": {
            "start": {"sheetId": sheet_id, "rowIndex": row, "columnIndex": col},
            "rows": [{"values": [{"pivotTable": pivot}]}],
            "fields": "pivotTable",
        }
    }


def _not_blank(offset: int) -> dict[str, Any]:
    """Open-ended sources include the empty rows below the data: keep them out of every count."""
    return {"columnOffsetIndex": offset, "filterCriteria": {"condition": {"type": "NOT_BLANK"}}}


def _count(offset: int, name: str) -> dict[str, Any]:
    return {"sourceColumnOffset": offset, "summarizeFunction": "COUNTA", "name": name}


def _chart(
    chart_id: int, sheet_id: int, anchor: tuple[int, int], spec: dict[str, Any], size: tuple[int, int] = (560, 320)
) -> dict[str, Any]:
    return {
        "addChart": {
            "chart": {
                "chartId": chart_id,
                "spec": spec,
                "position": {
                    "overlayPosition": {
                        "anchorCell": {"sheetId": sheet_id, "rowIndex": anchor[0], "columnIndex": anchor[1]},
                        "widthPixels": size[0],
                        "heightPixels": size[1],
                    }
                },
            }
        }
    }


def _column_chart(
    title: str, x_title: str, y_title: str, domain: dict[str, Any], series: list[dict[str, Any]],
    chart_type: str = "COLUMN", stacked: bool = False,
) -> dict[str, Any]:  # fmt: skip
    # A BAR chart lies on its side: its value axis is the bottom one.
    value_axis, domain_axis = ("BOTTOM_AXIS", "LEFT_AXIS") if chart_type == "BAR" else ("LEFT_AXIS", "BOTTOM_AXIS")
    basic: dict[str, Any] = {
        "chartType": chart_type,
        "legendPosition": "BOTTOM_LEGEND" if len(series) > 1 else "NO_LEGEND",
        "axis": [{"position": domain_axis, "title": x_title}, {"position": value_axis, "title": y_title}],
        "domains": [{"domain": domain}],
        "series": [
            {"series": data, "targetAxis": value_axis, "colorStyle": SERIES_COLOURS[i % len(SERIES_COLOURS)]}
            for i, data in enumerate(series)
        ],
        "headerCount": 1,
    }
    if stacked:
        basic["stackedType"] = "STACKED"
    return {"title": title, "basicChart": basic}


# -- the consolidated report's dashboard ---------------------------------------------------------

FUNNEL = [
    ("Leads", None),
    ("Chatted in the last 7 days", ("Last Interaction", {"type": "DATE_ON_OR_AFTER",
                                                         "values": [{"relativeDate": "PAST_WEEK"}]})),
    ("Visit scheduled or done", ("Visit Status", {"visibleValues": ["scheduled", "completed"]})),
    ("Visit completed", ("Visit Status", {"visibleValues": ["completed"]})),
]  # fmt: skip
FUNNEL_ROW = 4  # label row 4 (0-based 3) then one pivot per stage from row 5 (0-based 4)
RANK_PIVOT_AT = (8, 0)  # A9


def leads_pivots(leads_id: int, dash_id: int) -> list[dict[str, Any]]:
    columns = CONSOLIDATED_COLUMNS
    source = _grid(leads_id, 0, 0, end_col=len(columns))  # no end row: grows with the upsert
    key = _col(columns, "User ID")
    requests = []
    for index, (name, rule) in enumerate(FUNNEL):
        filters = [_not_blank(key)]
        if rule is not None:
            column, criteria = rule
            offset = _col(columns, column)
            if "type" in criteria:
                filters.append({"columnOffsetIndex": offset, "filterCriteria": {"condition": criteria}})
            else:
                filters.append({"columnOffsetIndex": offset, "filterCriteria": criteria})
        pivot = {"source": source, "values": [_count(key, name)], "filterSpecs": filters}
        requests.append(_pivot_cell(dash_id, FUNNEL_ROW, index, pivot))
    rank_by_visit = {
        "source": source,
        "rows": [{"sourceColumnOffset": _col(columns, "Rank"), "label": "Rank", "showTotals": False,
                  "sortOrder": "ASCENDING"}],
        "columns": [{"sourceColumnOffset": _col(columns, "Visit Scheduled"), "label": "Visit scheduled",
                     "showTotals": False, "sortOrder": "ASCENDING"}],
        "values": [_count(key, "Leads")],
        "filterSpecs": [_not_blank(key)],
    }  # fmt: skip
    requests.append(_pivot_cell(dash_id, *RANK_PIVOT_AT, rank_by_visit))
    return requests


def leads_format_rules(leads_id: int) -> list[dict[str, Any]]:
    """High rank and a scheduled visit stand out on ``Leads`` (column ranges, open-ended)."""
    rules = []
    for column, value, fmt in (("Rank", "High", HIGH_RANK_FORMAT), ("Visit Scheduled", "Yes", VISIT_FORMAT)):
        col = _col(CONSOLIDATED_COLUMNS, column)
        rules.append(
            {
                "ranges": [_grid(leads_id, 1, col, end_col=col + 1)],
                "booleanRule": {
                    "condition": {"type": "TEXT_EQ", "values": [{"userEnteredValue": value}]},
                    "format": fmt,
                },
            }
        )
    return rules


def leads_note(tab: str) -> str:
    return f"From the latest lead tab, {tab} (leads whose first chat was that month); updates itself."


def consolidated_build(tabs: Mapping[str, int], latest: str, lead_tabs: Sequence[str]) -> list[dict[str, Any]]:
    leads_id = tabs[latest]
    dash = DASHBOARD_SHEET_ID["consolidated"]
    chart_id = CHART_ID_BASE["consolidated"]
    row, col = RANK_PIVOT_AT
    # The pivot's second row holds the column group's values (No / Yes): the series names.
    rank_chart = _column_chart(
        "Leads by rank: visit scheduled or not",
        "Lead rank",
        "Number of leads",
        _open_column(dash, row + 1, col),
        [_open_column(dash, row + 1, col + 1), _open_column(dash, row + 1, col + 2)],
        chart_type="BAR",
        stacked=True,
    )
    return [
        _text_cells(dash, 0, 0, [("Sales dashboard — leads", HEADING)]),
        _text_cells(dash, 1, 0, [(leads_note(latest), NOTE)]),
        _text_cells(dash, FUNNEL_ROW - 1, 0, [("Funnel", BOLD)]),
        _text_cells(dash, RANK_PIVOT_AT[0] - 1, 0, [("Leads by rank × visit scheduled", BOLD)]),
        *leads_pivots(leads_id, dash),
        _chart(chart_id, dash, (3, 6), rank_chart),
        *lead_tab_rules(tabs, lead_tabs),
    ]  # fmt: skip


def lead_tab_rules(tabs: Mapping[str, int], lead_tabs: Sequence[str]) -> list[dict[str, Any]]:
    """High rank and a scheduled visit stand out on every lead tab (added with the tab)."""
    return [
        {"addConditionalFormatRule": {"index": i, "rule": r}}
        for tab in lead_tabs
        for i, r in enumerate(leads_format_rules(tabs[tab]))
    ]


# -- the session-wise report's dashboard --------------------------------------------------------

SESSION_PIVOTS_ROW = 4  # 0-based row of the three pivots' anchors (A5, D5, G5)
PER_DAY_AT, BY_INTENT_AT, BY_HOUR_AT = (SESSION_PIVOTS_ROW, 0), (SESSION_PIVOTS_ROW, 3), (SESSION_PIVOTS_ROW, 6)


def session_pivots(month_id: int, dash_id: int) -> list[dict[str, Any]]:
    columns = SESSION_COLUMNS
    source = _grid(month_id, 0, 0, end_col=len(columns))
    key, start, intent = (_col(columns, name) for name in ("Session ID", "Session Start", "Intent Detected"))
    filters = [_not_blank(key)]
    per_day = {
        "source": source,
        "rows": [{"sourceColumnOffset": start, "label": "Day", "showTotals": False, "sortOrder": "ASCENDING",
                  "groupRule": {"dateTimeRule": {"type": "YEAR_MONTH_DAY"}}}],
        "values": [_count(key, "Sessions")],
        "filterSpecs": filters,
    }  # fmt: skip
    by_intent = {
        "source": source,
        # Most frequent intent first: sort the rows by their count.
        "rows": [{"sourceColumnOffset": intent, "label": "Intent", "showTotals": False,
                  "sortOrder": "DESCENDING", "valueBucket": {"valuesIndex": 0}}],
        "values": [_count(key, "Sessions")],
        # Sessions with no detected intent would be a nameless slice: left out (the note says so).
        "filterSpecs": [*filters, _not_blank(intent)],
    }  # fmt: skip
    by_hour = {
        "source": source,
        "rows": [{"sourceColumnOffset": start, "label": "Hour (IST)", "showTotals": False, "sortOrder": "ASCENDING",
                  "groupRule": {"dateTimeRule": {"type": "HOUR"}}}],
        "values": [_count(key, "Sessions")],
        "filterSpecs": filters,
    }  # fmt: skip
    return [
        _pivot_cell(dash_id, *PER_DAY_AT, per_day),
        _pivot_cell(dash_id, *BY_INTENT_AT, by_intent),
        _pivot_cell(dash_id, *BY_HOUR_AT, by_hour),
    ]


def month_note(month: str) -> str:
    return f"From the latest month tab, {month}; updates itself as sessions are added. Intents: sessions with one."


def sessions_build(tabs: Mapping[str, int], month: str) -> list[dict[str, Any]]:
    dash = DASHBOARD_SHEET_ID["sessions"]
    chart_id = CHART_ID_BASE["sessions"]

    def domain_and_series(at: tuple[int, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return _open_column(dash, at[0], at[1]), [_open_column(dash, at[0], at[1] + 1)]

    per_day = _column_chart("Chat sessions per day", "Day", "Sessions started", *domain_and_series(PER_DAY_AT))
    per_hour = _column_chart("Busy hours: sessions by starting hour", "Hour of the day (IST)", "Sessions started",
                             *domain_and_series(BY_HOUR_AT))  # fmt: skip
    intent_domain, (intent_series,) = domain_and_series(BY_INTENT_AT)
    by_intent = {
        "title": "What buyers ask about: sessions by detected intent",
        "pieChart": {"domain": intent_domain, "series": intent_series, "legendPosition": "RIGHT_LEGEND"},
    }
    return [
        _text_cells(dash, 0, 0, [("Sales dashboard — chat sessions", HEADING)]),
        _text_cells(dash, 1, 0, [(month_note(month), NOTE)]),
        *session_pivots(tabs[month], dash),
        _chart(chart_id, dash, (3, 10), per_day),
        _chart(chart_id + 1, dash, (21, 10), by_intent),
        _chart(chart_id + 2, dash, (39, 10), per_hour),
    ]


# -- planning a run -----------------------------------------------------------------------------


def _dashboard_sheet(kind: Kind, title: str, index: int = 0) -> dict[str, Any]:
    return {
        "addSheet": {
            "properties": {
                "sheetId": DASHBOARD_SHEET_ID[kind],
                "title": title,
                "index": index,
                "gridProperties": {"rowCount": DASHBOARD_ROWS, "columnCount": DASHBOARD_COLUMNS,
                                   "hideGridlines": True},
            }
        }
    }  # fmt: skip


def plan(
    kind: Kind,
    tabs: Mapping[str, int],
    tabs_added: Sequence[str],
    is_report_tab: Callable[[str], bool],
    rebuild: bool = False,
) -> DashboardPlan:
    """The dashboard requests for this run, from the tab list (title → sheet id) the upsert read."""
    dash_id = DASHBOARD_SHEET_ID[kind]
    exists = dash_id in tabs.values()
    report_tabs = sorted(t for t in tabs if is_report_tab(t))
    if not report_tabs:
        return DashboardPlan(None, [])
    latest = report_tabs[-1]
    body = sessions_build(tabs, latest) if kind == "sessions" else consolidated_build(tabs, latest, report_tabs)
    if exists and not rebuild:
        requests: list[dict[str, Any]] = []
        if kind == "consolidated":  # a new lead tab gets the highlighting the others have
            requests += lead_tab_rules(tabs, [t for t in report_tabs if t in tabs_added])
        if latest in tabs_added:  # a newer month: the pivots follow it
            note = month_note(latest) if kind == "sessions" else leads_note(latest)
            pivots = session_pivots if kind == "sessions" else leads_pivots
            requests += [_text_cells(dash_id, 1, 0, [(note, NOTE)]), *pivots(tabs[latest], dash_id)]
        return DashboardPlan("repoint" if requests else None, requests)
    taken = {t for t, sid in tabs.items() if sid != dash_id}
    title = DASHBOARD_TITLE if DASHBOARD_TITLE not in taken else f"{DASHBOARD_TITLE} (leadflow)"
    requests = []
    if exists:
        requests.append({"deleteSheet": {"sheetId": dash_id}})
    requests += [
        # Relative-date filters ("last 7 days") follow the spreadsheet's time zone.
        {"updateSpreadsheetProperties": {"properties": {"timeZone": REPORT_TIMEZONE}, "fields": "timeZone"}},
        _dashboard_sheet(kind, title),
        *body,
    ]
    return DashboardPlan("rebuild" if exists else "build", requests, needs_rule_read=exists and kind == "consolidated")


def stale_rule_deletions(sheets: Sequence[Mapping[str, Any]], lead_ids: Sequence[int]) -> list[dict[str, Any]]:
    """On a rebuild: delete the rules an earlier build added to the lead tabs (matched by
    content), last first in each tab."""
    deletions = []
    for sheet in sheets:
        sheet_id = sheet.get("properties", {}).get("sheetId", 0)  # proto3 JSON omits a 0 id
        if sheet_id not in lead_ids:
            continue
        ours = leads_format_rules(sheet_id)
        rules = sheet.get("conditionalFormats", [])
        indexes = [i for i, rule in enumerate(rules) if _same_rule(rule, ours)]
        deletions += [{"deleteConditionalFormatRule": {"sheetId": sheet_id, "index": i}} for i in reversed(indexes)]
    return deletions


def _grid_key(rng: Mapping[str, Any]) -> tuple[Any, ...]:
    # Google's JSON omits zero-valued fields (sheetId 0, startColumnIndex 0): compare with defaults.
    return tuple(rng.get(k, 0) for k in ("sheetId", "startRowIndex", "startColumnIndex")) + tuple(
        rng.get(k) for k in ("endRowIndex", "endColumnIndex")
    )


def _same_rule(rule: Mapping[str, Any], ours: list[dict[str, Any]]) -> bool:
    condition = rule.get("booleanRule", {}).get("condition")
    ranges = [_grid_key(r) for r in rule.get("ranges", [])]
    return any(
        condition == mine["booleanRule"]["condition"] and ranges == [_grid_key(r) for r in mine["ranges"]]
        for mine in ours
    )


def ensure_dashboard(
    client: SheetsClient, kind: Kind, result: UpsertResult, spec: ReportSpec, rebuild: bool = False
) -> dict[str, Any]:
    """Build (or rebuild, or re-point) the dashboard if this run must; returns what it did.

    Uses the tab list the upsert already read, so a run that finds the dashboard in place makes
    no Sheets call here at all.
    """
    todo = plan(kind, result.tab_ids, result.tabs_added, spec.is_report_tab, rebuild)
    if todo.action is None:
        return {"action": None, "calls": 0}
    before = sum(client.calls[k] for k in ("reads", "writes"))
    requests = todo.requests
    if todo.needs_rule_read:
        meta = client.execute(
            client.spreadsheets.get(
                spreadsheetId=result.spreadsheet_id, fields="sheets(properties(sheetId),conditionalFormats)"
            ),
            "reads",
        )
        lead_ids = [sid for title, sid in result.tab_ids.items() if spec.is_report_tab(title)]
        requests = stale_rule_deletions(meta.get("sheets", []), lead_ids) + requests
    client.execute(
        client.spreadsheets.batchUpdate(spreadsheetId=result.spreadsheet_id, body={"requests": requests}), "writes"
    )
    calls = sum(client.calls[k] for k in ("reads", "writes")) - before
    log.info("Dashboard of the %s report: %s (%d requests, %d calls)", kind, todo.action, len(requests), calls)
    return {"action": todo.action, "requests": len(requests), "calls": calls}
