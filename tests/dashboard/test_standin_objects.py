"""The Sheets stand-in's pivot tables, charts and conditional formats, through googleapiclient.

Expected pivot outputs are written out by hand in the layout Google renders (header rows, blank
where a combination has no data, no totals unless asked for).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from devstack import clients
from devstack._http import serve_in_thread
from devstack.sheets_server import SheetsServer
from devstack.sheets_view import display, render
from leadflow.reports import dashboard

EPOCH = datetime(1899, 12, 30)
NOW = datetime.now(UTC)


def serial(moment: datetime) -> float:
    return (moment.replace(tzinfo=None) - EPOCH).total_seconds() / 86400


TODAY_NOON = serial(NOW.replace(hour=12, minute=0, second=0, microsecond=0))
OLD = TODAY_NOON - 20
SOURCE = [
    ["User ID", "Rank", "Visit", "Status", "Last"],
    ["u1", "High", "Yes", "scheduled", TODAY_NOON],
    ["u2", "High", "No", "completed", TODAY_NOON - 1 + 1 / 24],
    ["u3", "Low", "No", "", OLD],
    ["u4", "Medium", "Yes", "completed", OLD + 0.5],
    ["u5", "High", "No", "cancelled", TODAY_NOON - 2],
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SheetsServer]:
    running = SheetsServer(data_dir=tmp_path / "sheets")
    serve_in_thread(running)
    yield running
    running.stop()


@pytest.fixture
def api(server: SheetsServer):
    clients.set_settings(server.base_url, caller="user")  # spreadsheets.create as a person would
    options = {"api_endpoint": server.base_url + "/"}
    return build("sheets", "v4", credentials=AnonymousCredentials(), client_options=options, cache_discovery=False)


def _book(api, rows: list[list[Any]] = SOURCE) -> tuple[str, int, int]:
    created = (
        api.spreadsheets()
        .create(body={"properties": {"title": "t"}, "sheets": [{"properties": {"title": "Data"}}]})
        .execute()
    )
    sid = created["spreadsheetId"]
    data = created["sheets"][0]["properties"]["sheetId"]
    api.spreadsheets().values().update(
        spreadsheetId=sid, range="Data!A1", valueInputOption="RAW", body={"values": rows}
    ).execute()
    reply = _batch(api, sid, [{"addSheet": {"properties": {"title": "Pivots", "sheetId": 77}}}])
    return sid, data, reply["replies"][0]["addSheet"]["properties"]["sheetId"]


def _batch(api, sid: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return api.spreadsheets().batchUpdate(spreadsheetId=sid, body={"requests": requests}).execute()


def _pivot_at(sheet: int, row: int, col: int, pivot: dict[str, Any]) -> dict[str, Any]:
    start = {"sheetId": sheet, "rowIndex": row, "columnIndex": col}
    return {"updateCells": {"start": start, "rows": [{"values": [{"pivotTable": pivot}]}], "fields": "pivotTable"}}


def _values(api, sid: str, a1: str) -> list[list[Any]]:
    got = api.spreadsheets().values().get(spreadsheetId=sid, range=a1, valueRenderOption="UNFORMATTED_VALUE")
    return got.execute().get("values", [])


def _source(data: int) -> dict[str, Any]:
    return {"sheetId": data, "startRowIndex": 0, "startColumnIndex": 0, "endColumnIndex": 5}


NOT_BLANK = {"columnOffsetIndex": 0, "filterCriteria": {"condition": {"type": "NOT_BLANK"}}}
COUNT_USERS = {"sourceColumnOffset": 0, "summarizeFunction": "COUNTA"}


def test_pivot_tables_are_computed_from_open_ended_sources_in_googles_layout(api) -> None:
    sid, data, pivots = _book(api)
    rank_by_visit = {
        "source": _source(data),
        "rows": [{"sourceColumnOffset": 1, "sortOrder": "ASCENDING"}],
        "columns": [{"sourceColumnOffset": 2, "sortOrder": "ASCENDING", "label": "Visit?"}],
        "values": [COUNT_USERS],
        "filterSpecs": [NOT_BLANK],
    }
    by_rank_most_first = {
        "source": _source(data),
        "rows": [{"sourceColumnOffset": 1, "sortOrder": "DESCENDING", "valueBucket": {"valuesIndex": 0},
                  "showTotals": True}],
        "values": [{**COUNT_USERS, "name": "Leads"}],
        "filterSpecs": [NOT_BLANK],
    }  # fmt: skip
    this_week_done = {
        "source": _source(data),
        "values": [{**COUNT_USERS, "name": "Week, visit done"}],
        "filterSpecs": [
            NOT_BLANK,
            {"columnOffsetIndex": 4, "filterCriteria": {"condition": {
                "type": "DATE_ON_OR_AFTER", "values": [{"relativeDate": "PAST_WEEK"}]}}},
            {"columnOffsetIndex": 3, "filterCriteria": {"visibleValues": ["scheduled", "completed"]}},
        ],
    }  # fmt: skip
    _batch(
        api,
        sid,
        [
            _pivot_at(pivots, 0, 0, rank_by_visit),
            _pivot_at(pivots, 0, 5, by_rank_most_first),
            _pivot_at(pivots, 0, 8, this_week_done),
        ],
    )
    assert _values(api, sid, "Pivots!A1:C6") == [
        ["COUNTA of User ID", "Visit?"],
        ["Rank", "No", "Yes"],
        ["High", 2, 1],
        ["Low", 1],
        ["Medium", "", 1],
    ]
    assert _values(api, sid, "Pivots!F1:G6") == [["Rank", "Leads"], ["High", 3], ["Medium", 1], ["Low", 1],
                                                 ["Grand Total", 5]]  # fmt: skip
    assert _values(api, sid, "Pivots!I1:I3") == [["Week, visit done"], [2]]

    # The source has no end row: an appended lead is counted without touching the pivots.
    api.spreadsheets().values().append(
        spreadsheetId=sid, range="Data!A1", valueInputOption="RAW",
        body={"values": [["u6", "Low", "Yes", "completed", TODAY_NOON]]},
    ).execute()  # fmt: skip
    assert _values(api, sid, "Pivots!A4:C4") == [["Low", 1, 1]]
    assert _values(api, sid, "Pivots!F2:G3") == [["High", 3], ["Low", 2]]
    assert _values(api, sid, "Pivots!I2") == [[3]]


def test_date_groups_and_an_unfiltered_open_source_as_sheets_shows_them(api) -> None:
    day = datetime(2026, 11, 20, 10, 0)
    rows = [["Session", "Start"], ["a", serial(day)], ["b", serial(day + timedelta(minutes=59, seconds=59))],
            ["c", serial(day + timedelta(days=1, hours=3))]]  # fmt: skip
    sid, data, pivots = _book(api, rows)
    source = {"sheetId": data, "startRowIndex": 0, "startColumnIndex": 0, "endColumnIndex": 2}
    per_day = {
        "source": source,
        "values": [COUNT_USERS],
        "filterSpecs": [NOT_BLANK],
        "rows": [{"sourceColumnOffset": 1, "groupRule": {"dateTimeRule": {"type": "YEAR_MONTH_DAY"}}}],
    }
    per_hour = {"source": source, "values": [COUNT_USERS],
                "rows": [{"sourceColumnOffset": 1, "groupRule": {"dateTimeRule": {"type": "HOUR"}}}]}  # fmt: skip
    _batch(api, sid, [_pivot_at(pivots, 0, 0, per_day), _pivot_at(pivots, 0, 3, per_hour)])
    assert _values(api, sid, "Pivots!A1:B4") == [["Start", "COUNTA of Session"], ["2026-11-20", 2], ["2026-11-21", 1]]
    # No NOT_BLANK filter: the empty rows of the open-ended source form a blank group, as in Sheets.
    assert _values(api, sid, "Pivots!D1:E5") == [["Start", "COUNTA of Session"], [10, 2], [13, 1], ["", 0]]


def test_a_pivot_that_would_overwrite_data_shows_ref(api) -> None:
    sid, data, pivots = _book(api)
    api.spreadsheets().values().update(
        spreadsheetId=sid, range="Pivots!B3", valueInputOption="RAW", body={"values": [["a note"]]}
    ).execute()
    pivot = {"source": _source(data), "rows": [{"sourceColumnOffset": 1}], "values": [COUNT_USERS]}
    _batch(api, sid, [_pivot_at(pivots, 0, 0, pivot)])
    assert _values(api, sid, "Pivots!A1:B3") == [["#REF!"], [], ["", "a note"]]


@pytest.mark.parametrize(
    ("request_body", "status"),
    [
        # a column offset outside the source range
        ({"rows": [{"sourceColumnOffset": 9}], "values": [COUNT_USERS]}, 400),
        ({"values": []}, 400),
        # valid for Google, not evaluated here: refused loudly, never drawn wrong
        ({"values": [{"formula": "=1", "summarizeFunction": "CUSTOM"}]}, 501),
        ({"rows": [{"sourceColumnOffset": 1, "groupRule": {"histogramRule": {"interval": 2}}}],
          "values": [COUNT_USERS]}, 501),
    ],
)  # fmt: skip
def test_bad_or_unsupported_pivots_are_refused_and_nothing_is_applied(api, request_body, status) -> None:
    sid, data, pivots = _book(api)
    title = {"updateCells": {"start": {"sheetId": pivots}, "fields": "userEnteredValue",
                             "rows": [{"values": [{"userEnteredValue": {"stringValue": "title"}}]}]}}  # fmt: skip
    with pytest.raises(HttpError) as error:
        _batch(api, sid, [title, _pivot_at(pivots, 2, 0, {"source": _source(data), **request_body})])
    assert error.value.resp.status == status
    assert _values(api, sid, "Pivots!A1:A3") == []  # the batch is all-or-nothing


def _chart(sheet: int, domain: dict[str, Any], series: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec = {"title": "t", "basicChart": {"chartType": "COLUMN", "domains": [{"domain": {"sourceRange": {
        "sources": [domain]}}}], "series": [{"series": {"sourceRange": {"sources": [series]}}}]}}  # fmt: skip
    position = {"overlayPosition": {"anchorCell": {"sheetId": sheet, "rowIndex": 0, "columnIndex": 6}}}
    return {"addChart": {"chart": {"spec": spec, "position": position, **extra}}}


def test_charts_and_rules_are_validated_stored_and_persisted(api, server: SheetsServer, tmp_path: Path) -> None:
    sid, data, pivots = _book(api)
    column = {"sheetId": data, "startRowIndex": 0, "startColumnIndex": 1, "endColumnIndex": 2}
    square = {"sheetId": data, "startRowIndex": 0, "endRowIndex": 2, "startColumnIndex": 0, "endColumnIndex": 2}
    with pytest.raises(HttpError) as error:
        _batch(api, sid, [_chart(pivots, column, square)])
    assert error.value.resp.status == 400
    assert "exactly one dimension" in str(error.value)
    reply = _batch(api, sid, [_chart(pivots, column, column, chartId=5)])
    assert reply["replies"][0]["addChart"]["chart"]["chartId"] == 5
    with pytest.raises(HttpError) as error:
        _batch(api, sid, [_chart(pivots, column, column, chartId=5)])
    assert error.value.resp.status == 400

    rule = {"ranges": [{"sheetId": data, "startRowIndex": 1, "startColumnIndex": 1, "endColumnIndex": 2}],
            "booleanRule": {"condition": {"type": "TEXT_EQ", "values": [{"userEnteredValue": "High"}]},
                            "format": {"textFormat": {"bold": True}}}}  # fmt: skip
    too_much = {**rule, "booleanRule": {**rule["booleanRule"], "format": {"textFormat": {"fontSize": 20}}}}
    with pytest.raises(HttpError) as error:
        _batch(api, sid, [{"addConditionalFormatRule": {"rule": too_much, "index": 0}}])
    assert error.value.resp.status == 400
    _batch(api, sid, [{"addConditionalFormatRule": {"rule": rule, "index": 0}}])

    restarted = SheetsServer(data_dir=server.data_dir)  # loads what the first one persisted
    serve_in_thread(restarted)
    clients.set_settings(restarted.base_url, caller="user")
    try:
        book = restarted.spreadsheet(sid).resource()
        page = render([restarted.spreadsheet(sid)])
    finally:
        restarted.stop()
    by_title = {s["properties"]["title"]: s for s in book["sheets"]}
    assert [c["chartId"] for c in by_title["Pivots"]["charts"]] == [5]
    assert by_title["Data"]["conditionalFormats"] == [rule]
    assert 'data-chart-id="5"' in page
    assert page.count('class="text cf"') == 3  # the three High cells, coloured by the rule


def test_the_view_shows_dates_with_their_number_format() -> None:
    moment = serial(datetime(2026, 11, 20, 10, 50)) - 1e-9  # a double just below 10:50
    fmt = {"numberFormat": {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm"}}
    assert display(moment, fmt) == ("2026-11-20 10:50", "date")
    assert display(46346.5, {}) == ("46346.5", "number")


def _plan(tabs: dict[str, int], added: list[str] = (), rebuild: bool = False) -> dashboard.DashboardPlan:
    return dashboard.plan("sessions", tabs, list(added), lambda t: len(t) == 7 and t[4] == "-", rebuild)


def test_the_plan_builds_once_repoints_on_a_newer_month_and_rebuilds_on_request() -> None:
    dash = dashboard.DASHBOARD_SHEET_ID["sessions"]
    first = _plan({"2026-11": 0})
    assert first.action == "build"
    assert first.requests[1]["addSheet"]["properties"]["title"] == "Dashboard"
    assert _plan({"Dashboard": dash, "2026-11": 0}).requests == []
    assert _plan({"Dashboard": dash, "2026-11": 0, "2026-10": 4}, ["2026-10"]).action is None  # a backfill
    moved = _plan({"Dashboard": dash, "2026-11": 0, "2026-12": 9}, ["2026-12"])
    assert moved.action == "repoint"
    sources = [r["updateCells"]["rows"][0]["values"][0].get("pivotTable", {}).get("source") for r in moved.requests]
    assert [s["sheetId"] for s in sources if s] == [9, 9, 9]
    renamed = _plan({"My sales view": dash, "2026-11": 0})  # found by id, whatever its title
    assert renamed.action is None
    taken = _plan({"Dashboard": 5, "2026-11": 0})  # a person's own tab of that name
    assert taken.requests[1]["addSheet"]["properties"]["title"] == "Dashboard (leadflow)"
    again = _plan({"Dashboard": dash, "2026-11": 0}, rebuild=True)
    assert again.action == "rebuild"
    assert again.requests[0] == {"deleteSheet": {"sheetId": dash}}


def _check_schema(value: Any, schema: dict[str, Any], schemas: dict[str, Any], path: str) -> list[str]:
    """Unknown fields, wrong JSON types and values outside an enum, per the discovery document."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        problems = []
        for key, item in value.items():
            if key not in schema["properties"]:
                problems.append(f"{path}.{key}: unknown field")
            else:
                problems += _check_schema(item, schema["properties"][key], schemas, f"{path}.{key}")
        return problems
    if kind == "object" and "additionalProperties" in schema:
        return [p for k, v in value.items() for p in _check_schema(v, schema["additionalProperties"], schemas, k)]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        return [p for i, v in enumerate(value) for p in _check_schema(v, schema["items"], schemas, f"{path}[{i}]")]
    expected = {"string": str, "integer": int, "number": (int, float), "boolean": bool}.get(kind or "")
    if expected and (not isinstance(value, expected) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{path}: expected {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of the enum"]
    return []


def test_the_dashboard_requests_are_valid_per_the_sheets_discovery_document() -> None:
    import json

    import googleapiclient

    document = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "sheets.v4.json"
    schemas = json.loads(document.read_text())["schemas"]
    leads = dashboard.plan("consolidated", {"Leads": 0}, [], lambda t: t == "Leads")
    sessions = dashboard.plan("sessions", {"2026-11": 3}, [], lambda t: len(t) == 7)
    rebuild = dashboard.plan("consolidated", {"Leads": 0, "Dashboard": 1_100_000_001}, [], lambda t: t == "Leads", True)
    rules = dashboard.stale_rule_deletions(
        [{"properties": {}, "conditionalFormats": dashboard.leads_format_rules(0)}], [0]
    )
    body = {"requests": leads.requests + sessions.requests + rebuild.requests + rules}
    assert len(rules) == 2  # proto3 JSON omits sheetId 0: the rules are still recognised as ours
    assert _check_schema(body, {"$ref": "BatchUpdateSpreadsheetRequest"}, schemas, "body") == []
    kinds = {next(iter(r)) for r in body["requests"]}
    assert kinds == {"updateSpreadsheetProperties", "addSheet", "updateCells", "addChart",
                     "addConditionalFormatRule", "deleteSheet", "deleteConditionalFormatRule"}  # fmt: skip
