"""How a report tab looks after each write, as one ``batchUpdate`` after the values: month tabs
in calendar order, frozen bold header, date formats, a full-row sort (which also takes the rows
the write cleared to the bottom), the filter (only if absent) and the warning-only protection
(only if absent), columns sized to fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leadflow.reports.sheets_api import PROTECTED_DESCRIPTION, Tab

if TYPE_CHECKING:
    from leadflow.reports.sheets import ReportSpec

DATETIME_FORMAT = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm"}


def layout_requests(
    spec: ReportSpec, tabs: dict[str, Tab], last_rows: dict[str, int], width: int, sort: bool = True
) -> list[dict[str, Any]]:
    """``last_rows``: tab -> its last written row, for each tab to lay out. ``sort`` False: rows
    stay where they are (the lead tabs, whose row index relies on it). Every request is
    idempotent: Google may apply a call twice when its answer is lost and it is resent."""
    requests: list[dict[str, Any]] = []
    # Month tabs in calendar order, whatever order runs created them in, from where the first of
    # them stands (``tabs`` is in sheet order): the Dashboard and any tab before them stay put.
    # Only when out of order, and each move is to the left, where Google's "index before the
    # move" and the final index agree.
    order = list(tabs)
    report_tabs = [t for t in order if spec.is_report_tab(t)]
    first = order.index(report_tabs[0]) if report_tabs else 0
    for offset, tab in enumerate(sorted(report_tabs) if report_tabs != sorted(report_tabs) else []):
        requests.append(
            {"updateSheetProperties": {"properties": {"sheetId": tabs[tab].sheet_id, "index": first + offset},
                                       "fields": "index"}}
        )  # fmt: skip
    for tab in sorted(last_rows):
        sheet_id = tabs[tab].sheet_id
        end_row = last_rows[tab]
        grid = {"sheetId": sheet_id, "startColumnIndex": 0, "endColumnIndex": width}
        requests += [
            {"updateSheetProperties": {
                "properties": {"sheetId": sheet_id, "gridProperties": {"frozenRowCount": 1}},
                "fields": "gridProperties.frozenRowCount"}},
            {"repeatCell": {
                "range": {**grid, "startRowIndex": 0, "endRowIndex": 1},
                "cell": {"userEnteredFormat": {"textFormat": {"bold": True}}},
                "fields": "userEnteredFormat.textFormat.bold"}},
        ]  # fmt: skip
        for name in spec.columns:
            if name in spec.datetime_columns:
                col = spec.columns.index(name)
                requests.append(
                    {"repeatCell": {
                        "range": {"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": col,
                                  "endColumnIndex": col + 1},
                        "cell": {"userEnteredFormat": {"numberFormat": DATETIME_FORMAT}},
                        "fields": "userEnteredFormat.numberFormat"}}
                )  # fmt: skip
        if sort and end_row >= 2:
            sort_specs = [
                {"dimensionIndex": spec.columns.index(col), "sortOrder": "ASCENDING" if asc else "DESCENDING"}
                for col, asc in [*spec.sort_by, (spec.key, True)]
            ]
            # No end column: the sort carries whole rows, so columns the team adds on the right
            # (notes, owner) stay beside their lead.
            requests.append(
                {"sortRange": {"range": {"sheetId": sheet_id, "startRowIndex": 1, "endRowIndex": end_row,
                                         "startColumnIndex": 0},
                               "sortSpecs": sort_specs}}
            )  # fmt: skip
        if not tabs[tab].has_filter:  # the team's own filter settings are theirs to keep
            # Open-ended rows, so the filter covers the rows later runs append.
            requests.append({"setBasicFilter": {"filter": {"range": {**grid, "startRowIndex": 0}}}})
        if not tabs[tab].protected:
            # Warning-only: people may still edit (say, fix a name), but are told the DAG owns it.
            requests.append(
                {"addProtectedRange": {"protectedRange": {
                    "range": grid, "description": PROTECTED_DESCRIPTION, "warningOnly": True}}}
            )  # fmt: skip
        requests.append(
            {"autoResizeDimensions": {"dimensions": {"sheetId": sheet_id, "dimension": "COLUMNS",
                                                      "startIndex": 0, "endIndex": width}}}
        )  # fmt: skip
    return requests
