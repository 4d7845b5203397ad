"""An HTML view of the Sheets stand-in's spreadsheets, close to what a person sees in Google Sheets.

Reads the stand-in's persisted state (``<spreadsheetId>.json`` in its data dir), recomputes the
pivot tables (relative dates such as "last 7 days" move with the clock, as Sheets recomputes on
open) and writes one self-contained ``index.html``: a tab bar per spreadsheet, each tab's cells
with their number formats applied (a serial number with ``yyyy-mm-dd hh:mm`` reads as a date),
the frozen header rows sticky, conditional-format colours, and each chart drawn as SVG from the
cells it is bound to (usually a pivot table's output).

    python -m devstack.sheets_view --data-dir .local/stack/sheets [--out FILE]
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.sheets_server import Sheet, Spreadsheet, load_spreadsheets
from devstack.sheets_server.a1 import column_letters
from devstack.sheets_server.embedded import charts, conditional_formats, refresh_pivots
from devstack.sheets_server.pivots import EPOCH, condition_holds

MAX_ROWS = 500  # per tab: the view is for looking, not for 100k-row exports
PALETTE = ["#4285f4", "#34a853", "#fbbc04", "#ea4335", "#46bdc6", "#7baaf7", "#f07b72", "#fcd04f", "#71c287"]


# -- number formats -------------------------------------------------------------------------------


def _covers(rng: dict[str, Any], row: int, col: int) -> bool:
    return rng.get("startRowIndex", 0) <= row < rng.get("endRowIndex", math.inf) and rng.get(
        "startColumnIndex", 0
    ) <= col < rng.get("endColumnIndex", math.inf)


def cell_format(sheet: Sheet, row: int, col: int) -> dict[str, Any]:
    """The user-entered format of a cell: later formats override earlier ones, field by field."""
    merged: dict[str, Any] = {}
    for record in sheet.formats:
        if _covers(record.get("range", {}), row, col):
            for key, value in (record.get("userEnteredFormat") or {}).items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
    return merged


def format_date(serial: float, pattern: str) -> str:
    # Serials are doubles (10:50 may be 10:49:59.99999): round to the second, then show the fields.
    moment = EPOCH + timedelta(seconds=round(serial * 86400))
    out, i = [], 0
    last_was_hour = False
    while i < len(pattern):
        for token in ("yyyy", "yy", "mmmm", "mmm", "mm", "m", "dd", "d", "hh", "h", "ss", "s"):
            if pattern.startswith(token, i):
                break
        else:
            out.append(pattern[i])
            i += 1
            continue
        i += len(token)
        minutes = token in ("mm", "m") and (last_was_hour or pattern[i:].lstrip(":").startswith("s"))
        out.append(
            {
                "yyyy": f"{moment.year:04d}", "yy": f"{moment.year % 100:02d}",
                "mmmm": moment.strftime("%B"), "mmm": moment.strftime("%b"),
                "mm": f"{moment.minute:02d}" if minutes else f"{moment.month:02d}",
                "m": str(moment.minute) if minutes else str(moment.month),
                "dd": f"{moment.day:02d}", "d": str(moment.day),
                "hh": f"{moment.hour:02d}", "h": str(moment.hour),
                "ss": f"{moment.second:02d}", "s": str(moment.second),
            }[token]
        )  # fmt: skip
        last_was_hour = token in ("hh", "h")
    return "".join(out)


def format_number(value: float, pattern: str) -> str:
    decimals = len(pattern.split(".", 1)[1].rstrip("%")) if "." in pattern else 0
    text = f"{value:,.{decimals}f}" if "," in pattern else f"{value:.{decimals}f}"
    return text


def display(value: Any, fmt: dict[str, Any]) -> tuple[str, str]:
    """(text, kind) of a stored value under its number format, as the Sheets UI shows it."""
    if value is None:
        return "", "blank"
    if isinstance(value, dict) and "formula" in value:
        return str(value["formula"]), "formula"
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE"), "bool"
    if isinstance(value, int | float):
        number = fmt.get("numberFormat") or {}
        kind = number.get("type")
        pattern = number.get("pattern")
        if kind in ("DATE", "DATE_TIME", "TIME"):
            default = {"DATE": "yyyy-mm-dd", "TIME": "hh:mm:ss", "DATE_TIME": "yyyy-mm-dd hh:mm:ss"}[kind]
            return format_date(float(value), pattern or default), "date"
        if kind in ("NUMBER", "PERCENT", "CURRENCY") and pattern:
            return format_number(float(value) * (100 if kind == "PERCENT" else 1), pattern), "number"
        return (str(int(value)) if float(value).is_integer() else f"{value:.10g}"), "number"
    return str(value), "text"


# -- colours and conditional formats ---------------------------------------------------------------


def css_colour(style: dict[str, Any] | None) -> str | None:
    if not style:
        return None
    rgb = style.get("rgbColor", style)
    if not any(k in rgb for k in ("red", "green", "blue")):
        return None
    return "#" + "".join(f"{round(255 * float(rgb.get(k, 0))):02x}" for k in ("red", "green", "blue"))


def _style(fmt: dict[str, Any]) -> str:
    parts = []
    background = css_colour(fmt.get("backgroundColorStyle") or fmt.get("backgroundColor"))
    if background:
        parts.append(f"background:{background}")
    text = fmt.get("textFormat") or {}
    colour = css_colour(text.get("foregroundColorStyle") or text.get("foregroundColor"))
    if colour:
        parts.append(f"color:{colour}")
    if text.get("bold"):
        parts.append("font-weight:bold")
    if text.get("italic"):
        parts.append("font-style:italic")
    if text.get("fontSize"):
        parts.append(f"font-size:{int(text['fontSize']) + 2}px")
    return ";".join(parts)


def conditional_style(sheet: Sheet, row: int, col: int, value: Any, today: Any) -> dict[str, Any] | None:
    """The format of the first conditional rule whose range covers the cell and whose condition holds."""
    for rule in conditional_formats(sheet):
        boolean = rule.get("booleanRule")
        if not boolean or not any(_covers(r, row, col) for r in rule.get("ranges", [])):
            continue
        if condition_holds(boolean["condition"], value, today):
            return boolean.get("format") or {}
    return None


# -- charts ----------------------------------------------------------------------------------------


def _column_values(book: Spreadsheet, grid: dict[str, Any]) -> list[Any]:
    sheet = book.sheet_by_id(grid.get("sheetId", 0))
    col = grid.get("startColumnIndex", 0)
    end = min(grid.get("endRowIndex", len(sheet.rows)), len(sheet.rows))
    out = []
    for row in range(grid.get("startRowIndex", 0), end):
        cells = sheet.rows[row]
        out.append(cells[col] if col < len(cells) else None)
    return out


def _source(book: Spreadsheet, data: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for grid in (data.get("sourceRange") or {}).get("sources", []):
        values += _column_values(book, grid)
    return values


def chart_data(book: Spreadsheet, spec: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(categories, [(series name, values)]) of a chart, from the cells its ranges point at."""
    if "pieChart" in spec:
        domain_data, series_data, headers = spec["pieChart"]["domain"], [spec["pieChart"]["series"]], 1
    else:
        basic = spec["basicChart"]
        domain_data = basic["domains"][0]["domain"]
        series_data = [s["series"] for s in basic.get("series", [])]
        headers = basic.get("headerCount", 1)
    domain = _source(book, domain_data)
    columns = [_source(book, data) for data in series_data]
    # Open-ended ranges: the data ends at the first blank category below the header.
    length = next((i for i, v in enumerate(domain[headers:]) if v in (None, "")), len(domain) - headers)
    categories = [display(v, {})[0] for v in domain[headers : headers + length]]
    series = []
    for column in columns:
        name = display(column[0], {})[0] if headers and column else ""
        body = column[headers : headers + length] + [None] * (length - len(column[headers:]))
        if any(v not in (None, "") for v in body) or name:
            series.append((name, [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
                                  for v in body]))  # fmt: skip
    return categories, series


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def svg_chart(book: Spreadsheet, chart: dict[str, Any]) -> str:
    spec = chart.get("spec", {})
    categories, series = chart_data(book, spec)
    title = spec.get("title", "")
    width, height = 560, 320
    head = f'<figure class="chart" data-chart-id="{_esc(chart.get("chartId"))}" data-series="{len(series)}" '
    head += f'data-points="{len(categories)}"><figcaption>{_esc(title)}</figcaption>'
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">']  # fmt: skip
    if "pieChart" in spec:
        svg += _pie(categories, series[0][1] if series else [], width, height)
    else:
        basic = spec["basicChart"]
        axes = {a.get("position"): a.get("title", "") for a in basic.get("axis", [])}
        svg += _bars(categories, series, basic, axes, width, height)
    svg.append("</svg>")
    return head + "".join(svg) + "</figure>"


def _pie(categories: list[str], values: list[float], width: int, height: int) -> list[str]:
    total = sum(v for v in values if v > 0)
    out: list[str] = []
    if not total:
        return ['<text x="20" y="40" class="empty">No data</text>']
    cx, cy, radius = 150, height / 2, min(130, height / 2 - 20)
    angle = -math.pi / 2
    for i, (label, value) in enumerate(zip(categories, values, strict=True)):
        if value <= 0:
            continue
        sweep = 2 * math.pi * value / total
        colour = PALETTE[i % len(PALETTE)]
        if sweep >= 2 * math.pi - 1e-9:
            out.append(
                f'<circle class="slice" cx="{cx}" cy="{cy}" r="{radius}" fill="{colour}" data-value="{value:g}"/>'
            )
        else:
            x1, y1 = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
            x2, y2 = cx + radius * math.cos(angle + sweep), cy + radius * math.sin(angle + sweep)
            large = 1 if sweep > math.pi else 0
            out.append(
                f'<path class="slice" d="M{cx},{cy} L{x1:.2f},{y1:.2f} '
                f'A{radius},{radius} 0 {large} 1 {x2:.2f},{y2:.2f} Z" '
                f'fill="{colour}" data-value="{value:g}"><title>{_esc(label or "(blank)")}: {value:g}</title></path>'
            )
        angle += sweep
        y = 30 + 20 * i
        out.append(f'<rect x="310" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="328" y="{y}" class="legend">{_esc(label or "(blank)")} — {value:g} '
                   f'({100 * value / total:.0f}%)</text>')  # fmt: skip
    return out


def _nice_scale(peak: float) -> tuple[float, float]:
    """An axis maximum and tick step a person would draw (1, 2 or 5 times a power of ten)."""
    if peak <= 0:
        return 1.0, 1.0
    raw = peak / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if peak <= 4:
        step = 1.0
    return math.ceil(peak / step) * step, step


def _value_grid(
    peak: float, tick: float, horizontal: bool, left: float, top: float, plot_w: float, plot_h: float
) -> list[str]:
    out = []
    for k in range(round(peak / tick) + 1):
        value = tick * k
        share = value / peak
        if horizontal:
            x = left + plot_w * share
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" class="grid"/>')
            out.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="tick">{value:g}</text>')
        else:
            y = top + plot_h - plot_h * share
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{value:g}</text>')
    return out


def _bars(
    categories: list[str], series: list[tuple[str, list[float]]], basic: dict[str, Any], axes: dict[str, str],
    width: int, height: int,
) -> list[str]:  # fmt: skip
    horizontal = basic.get("chartType") == "BAR"
    stacked = basic.get("stackedType") in ("STACKED", "PERCENT_STACKED")
    left, right, top, bottom = (90, 20, 20, 70) if horizontal else (60, 20, 20, 80)
    plot_w, plot_h = width - left - right, height - top - bottom
    out: list[str] = []
    if not categories or not series:
        return ['<text x="20" y="40" class="empty">No data</text>']
    totals = [sum(s[1][i] for s in series) for i in range(len(categories))]
    peak, tick = _nice_scale(max(totals if stacked else [v for s in series for v in s[1]] + [0]))
    out += _value_grid(peak, tick, horizontal, left, top, plot_w, plot_h)
    step = (plot_h if horizontal else plot_w) / len(categories)
    band = step * 0.7 / (1 if stacked else len(series))
    for i, category in enumerate(categories):
        offset = 0.0
        for j, (name, values) in enumerate(series):
            size = values[i] / peak * (plot_w if horizontal else plot_h)
            start = step * i + step * 0.15 + (0 if stacked else band * j)
            colour = css_colour(basic["series"][j].get("colorStyle")) or PALETTE[j % len(PALETTE)]
            if horizontal:
                x, y, w, h = left + offset, top + start, size, band
            else:
                x, y, w, h = left + start, top + plot_h - size - offset, band, size
            if values[i] > 0:
                out.append(
                    f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{colour}" '
                    f'data-value="{values[i]:g}"><title>{_esc(category)} · {_esc(name)}: {values[i]:g}</title></rect>'
                )
            if stacked:
                offset += size
        label_at = step * i + step / 2
        if horizontal:
            out.append(
                f'<text x="{left - 6}" y="{top + label_at + 4:.1f}" text-anchor="end" class="tick">'
                f"{_esc(category)}</text>"
            )
        else:
            out.append(f'<text x="{left + label_at:.1f}" y="{top + plot_h + 14}" text-anchor="end" class="tick" '
                       f'transform="rotate(-35 {left + label_at:.1f} {top + plot_h + 14})">'
                       f"{_esc(category)}</text>")  # fmt: skip
    domain_title = axes.get("LEFT_AXIS" if horizontal else "BOTTOM_AXIS", "")
    value_title = axes.get("BOTTOM_AXIS" if horizontal else "LEFT_AXIS", "")
    x_title, y_title = (value_title, domain_title) if horizontal else (domain_title, value_title)
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis-title">'
        f"{_esc(x_title)}</text>"
    )
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" class="axis-title" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{_esc(y_title)}</text>')  # fmt: skip
    if len(series) > 1:
        for j, (name, _values) in enumerate(series):
            colour = css_colour(basic["series"][j].get("colorStyle")) or PALETTE[j % len(PALETTE)]
            x = left + 110 * j
            out.append(f'<rect x="{x}" y="{height - 40}" width="12" height="12" fill="{colour}"/>')
            out.append(f'<text x="{x + 16}" y="{height - 30}" class="legend">{_esc(name)}</text>')
    return out


# -- the page ---------------------------------------------------------------------------------------


def _tab_html(book: Spreadsheet, sheet: Sheet, today: Any) -> str:
    frozen = int(sheet.grid.get("frozenRowCount", 0))
    rows = sheet.rows[:MAX_ROWS]
    width = max((len(r) for r in rows), default=0)
    parts = [f'<div class="charts">{"".join(svg_chart(book, c) for c in charts(sheet))}</div>']
    if not width:
        parts.append('<p class="empty">(empty tab)</p>')
        return "".join(parts)
    letters = "".join(f"<th>{_esc(column_letters(c))}</th>" for c in range(width))
    head, body = [f'<tr class="letters"><th></th>{letters}</tr>'], []
    for r, cells in enumerate(rows):
        tds = []
        for c in range(width):
            value = cells[c] if c < len(cells) else None
            fmt = cell_format(sheet, r, c)
            text, kind = display(value if not hasattr(value, "text") else {"formula": value.text}, fmt)
            style = _style(fmt)
            conditional = conditional_style(sheet, r, c, value, today)
            classes = [kind]
            if conditional is not None:
                style = ";".join(filter(None, [style, _style(conditional)]))
                classes.append("cf")
            tds.append(f'<td class="{" ".join(classes)}" style="{style}">{_esc(text)}</td>')
        line = f'<tr><th class="rownum">{r + 1}</th>{"".join(tds)}</tr>'
        (head if r < frozen else body).append(line)
    more = f'<p class="note">{len(sheet.rows) - MAX_ROWS} more rows not shown</p>' if len(sheet.rows) > MAX_ROWS else ""
    parts.append(
        f'<div class="grid"><table><thead>{"".join(head)}</thead><tbody>{"".join(body)}</tbody></table></div>{more}'
    )
    return "".join(parts)


STYLE = """
body{font-family:Arial,Helvetica,sans-serif;margin:0;background:#f8f9fa;color:#202124}
header{background:#fff;border-bottom:1px solid #dadce0;padding:10px 16px}
h1{font-size:18px;margin:0} h2{font-size:16px;margin:16px 16px 4px}
.book{background:#fff;margin:12px 16px;border:1px solid #dadce0}
.tabs{display:flex;gap:2px;background:#f1f3f4;border-top:1px solid #dadce0;padding:0 8px}
.tabs button{border:0;background:none;padding:8px 14px;cursor:pointer;font-size:13px}
.tabs button.active{background:#fff;color:#188038;font-weight:bold;border-bottom:3px solid #188038}
.panel{display:none;padding:8px} .panel.active{display:block}
.grid{max-height:520px;overflow:auto;border:1px solid #dadce0}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #e2e3e3;padding:2px 6px;white-space:nowrap;max-width:320px;overflow:hidden;
  text-overflow:ellipsis}
th{background:#f8f9fa;color:#5f6368;font-weight:normal} td.number,td.date{text-align:right}
thead tr{position:sticky;top:0;z-index:1} thead td{background:#fff;border-bottom:2px solid #9aa0a6}
thead tr.letters{top:0} .charts{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:8px}
figure.chart{margin:0;border:1px solid #dadce0;background:#fff;padding:6px}
figcaption{font-weight:bold;font-size:14px;margin:2px 4px 6px}
.tick,.legend{font-size:11px;fill:#5f6368} .axis-title{font-size:12px;fill:#202124}
.grid line,line.grid{stroke:#e8eaed} .empty{color:#80868b;font-style:italic}
"""

SCRIPT = """
function showTab(book, index) {
  document.querySelectorAll('[data-book="' + book + '"] .tabs button').forEach(function (b, i) {
    b.classList.toggle('active', i === index); });
  document.querySelectorAll('[data-book="' + book + '"] .panel').forEach(function (p, i) {
    p.classList.toggle('active', i === index); });
}
// What a reader sees, measured by the browser (used by the browser test, harmless otherwise).
window.addEventListener('load', function () {
  var charts = Array.prototype.map.call(document.querySelectorAll('figure.chart'), function (f) {
    var marks = Array.prototype.filter.call(f.querySelectorAll('.bar, .slice'), function (m) {
      var box = m.getBBox(); return box.width > 0 && box.height > 0; });
    return {title: f.querySelector('figcaption').textContent, series: +f.dataset.series,
            points: +f.dataset.points, drawn: marks.length};
  });
  var dates = Array.prototype.map.call(document.querySelectorAll('td.date'), function (t) { return t.textContent; });
  var out = document.getElementById('view-check');
  out.textContent = JSON.stringify({charts: charts, dates: dates.slice(0, 20)});
});
"""


def render(books: Sequence[Spreadsheet], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    sections = []
    for b, book in enumerate(books):
        from zoneinfo import ZoneInfo

        refresh_pivots(book, now)
        today = now.astimezone(ZoneInfo(book.properties.get("timeZone") or "Etc/GMT")).date()
        buttons = "".join(
            f'<button type="button" class="{"active" if i == 0 else ""}" onclick="showTab({b},{i})">'
            f"{_esc(s.title)}</button>"
            for i, s in enumerate(book.sheets)
        )
        panels = "".join(
            f'<section class="panel{" active" if i == 0 else ""}" data-tab="{_esc(s.title)}">'
            f"{_tab_html(book, s, today)}</section>"
            for i, s in enumerate(book.sheets)
        )
        title = _esc(book.properties.get("title", ""))
        sections.append(
            f'<div class="book" data-book="{b}"><h2>{title} <small>({_esc(book.spreadsheet_id[:10])}…)</small></h2>'
            f'{panels}<nav class="tabs">{buttons}</nav></div>'
        )
    stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>leadflow — local Google Sheets view</title>'
        f"<style>{STYLE}</style></head><body><header><h1>leadflow — local Google Sheets view</h1>"
        f"<small>{len(books)} spreadsheet(s) from the Sheets stand-in, rendered {stamp}</small></header>"
        f"{''.join(sections) or '<p class=empty>No spreadsheets yet.</p>'}"
        f'<pre id="view-check" hidden></pre><script>{SCRIPT}</script></body></html>'
    )


def write_view(data_dir: Path, out: Path | None = None, now: datetime | None = None) -> Path:
    books = load_spreadsheets(data_dir) if data_dir.is_dir() else []
    books.sort(key=lambda book: (str(book.properties.get("title", "")), book.spreadsheet_id))
    target = out or data_dir / "index.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(books, now), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sheets_view", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the Sheets stand-in's --data-dir")
    parser.add_argument("--out", type=Path, help="the HTML file (default: DATA_DIR/index.html)")
    args = parser.parse_args(argv)
    path = write_view(args.data_dir, args.out)
    print(f"HTML view of the spreadsheets: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
