"""batchUpdate requests on charts: addChart, deleteEmbeddedObject.

Charts are stored as the API returns them (``EmbeddedChart``) on the sheet they float over.
What Google checks is checked here: the anchor sheet and every source range exist, each source
is one row or one column wide, the domain and every series have the same number of sources,
and a chart id is unique in the spreadsheet. Chart kinds other than basic and pie charts are
refused with 501 (this stand-in cannot draw them), never accepted silently.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.embedded import all_chart_ids, charts
from devstack.sheets_server.model import Spreadsheet, grid_range

_BASIC_TYPES = {"BAR", "LINE", "AREA", "COLUMN", "SCATTER", "COMBO", "STEPPED_AREA"}


def _sources(book: Spreadsheet, data: Any, where: str) -> int:
    sources = ((data or {}).get("sourceRange") or {}).get("sources")
    if not sources:
        raise ApiError(400, f"{where}: a chart's data needs sourceRange.sources")
    for i, raw in enumerate(sources):
        rng = grid_range(book, raw)
        start_row, end_row, start_col, end_col = rng.bounds()
        if end_row - start_row != 1 and end_col - start_col != 1:
            raise ApiError(400, f"{where}.sources[{i}]: exactly one dimension of a source range must have length 1")
    return len(sources)


def _check_spec(book: Spreadsheet, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ApiError(400, "chart.spec is required")
    kinds = [k for k in spec if k.endswith("Chart")]
    if len(kinds) != 1:
        raise ApiError(400, "chart.spec must set exactly one chart type")
    if kinds[0] == "pieChart":
        pie = spec["pieChart"]
        if _sources(book, pie.get("domain"), "pieChart.domain") != _sources(book, pie.get("series"), "pieChart.series"):
            raise ApiError(400, "pieChart: the domain and the series must have the same number of source ranges")
        return
    if kinds[0] != "basicChart":
        raise ApiError(501, f"The stand-in does not draw {kinds[0]}")
    basic = spec["basicChart"]
    if basic.get("chartType") not in _BASIC_TYPES:
        raise ApiError(400, f"basicChart.chartType must be one of {sorted(_BASIC_TYPES)}")
    domains = basic.get("domains") or []
    if len(domains) > 1:
        raise ApiError(400, "basicChart: only a single domain is supported")
    counts = {_sources(book, d.get("domain"), f"basicChart.domains[{i}].domain") for i, d in enumerate(domains)}
    series = basic.get("series") or []
    counts |= {_sources(book, s.get("series"), f"basicChart.series[{i}].series") for i, s in enumerate(series)}
    if len(counts) > 1:
        raise ApiError(400, "basicChart: the domain and all series must have the same number of source ranges")


@batch_request("addChart")
def add_chart(book: Spreadsheet, params: dict[str, Any]) -> dict[str, Any]:
    chart = copy.deepcopy(params.get("chart") or {})
    _check_spec(book, chart.get("spec"))
    position = chart.get("position") or {}
    if position.get("newSheet"):
        raise ApiError(501, "The stand-in places charts over a grid only (overlayPosition)")
    overlay = position.get("overlayPosition")
    if not overlay or "anchorCell" not in overlay:
        raise ApiError(400, "chart.position.overlayPosition.anchorCell is required")
    anchor = overlay["anchorCell"]
    sheet = book.sheet_by_id(anchor.get("sheetId", 0))
    if anchor.get("rowIndex", 0) >= sheet.row_count or anchor.get("columnIndex", 0) >= sheet.column_count:
        raise ApiError(400, "The chart's anchor cell is outside the grid.")
    taken = all_chart_ids(book)
    if "chartId" in chart:
        if int(chart["chartId"]) in taken:
            raise ApiError(400, f"An object with id {chart['chartId']} already exists.")
    else:
        chart["chartId"] = next(i for i in iter(lambda: random.randint(1, 2**31 - 1), None) if i not in taken)
    overlay.setdefault("widthPixels", 600)
    overlay.setdefault("heightPixels", 371)
    charts(sheet).append(chart)
    return {"addChart": {"chart": copy.deepcopy(chart)}}


@batch_request("deleteEmbeddedObject")
def delete_embedded_object(book: Spreadsheet, params: dict[str, Any]) -> None:
    object_id = params.get("objectId")
    for sheet in book.sheets:
        kept = [c for c in charts(sheet) if c["chartId"] != object_id]
        if len(kept) != len(charts(sheet)):
            sheet.embedded["charts"] = kept
            return
    raise ApiError(400, f"No object with id {object_id}")
