"""Pivot tables computed from their source cells, laid out the way Google Sheets renders them.

Pure functions over cell values (no server state): ``check`` rejects what Google would reject
(400) and what this stand-in does not evaluate (501, so a test never passes on a silently wrong
pivot); ``compute`` returns the output grid, anchored at the pivot's cell.

Layout, as Google draws it (``showTotals`` defaults to false in the API, unlike the UI):

* rows only: ``[row label, value names...]`` then one row per group value;
* a column group: ``[value name, column label]``, then ``[row label, column values...]``, then
  the rows, blank where a combination has no data;
* no groups: ``[value names...]`` then ``[totals...]``.

Empty source rows count like any other row (an open-ended source reaches to the grid's last
row), so a pivot without a NOT_BLANK filter gets a blank group, as in Sheets.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from devstack._http import ApiError

EPOCH = datetime(1899, 12, 30)
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

type Value = bool | int | float | str | None


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_datetime(value: Value) -> datetime | None:
    if not _is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return None
    # A double holds 10:00 as 09:59:59.99999: buckets go by the nearest second.
    return EPOCH + timedelta(seconds=round(float(value) * 86400))  # type: ignore[arg-type]


def _text(value: Value) -> str:
    if value is None:
        return ""
    if hasattr(value, "text"):  # a stored formula: never evaluated here, so its text
        return str(value.text)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- date-time grouping ---------------------------------------------------------------------------

_DATE_RULES: dict[str, Callable[[datetime], tuple[Any, Value]]] = {
    # rule -> (sort key, label) of a moment
    "YEAR_MONTH_DAY": lambda d: ((d.year, d.month, d.day), f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    "YEAR_MONTH": lambda d: ((d.year, d.month), f"{d.year:04d}-{MONTHS[d.month - 1]}"),
    "YEAR": lambda d: (d.year, d.year),
    "MONTH": lambda d: (d.month, MONTHS[d.month - 1]),
    "DAY_MONTH": lambda d: ((d.month, d.day), f"{d.day}-{MONTHS[d.month - 1]}"),
    "DAY_OF_MONTH": lambda d: (d.day, d.day),
    "DAY_OF_WEEK": lambda d: ((d.weekday() + 1) % 7, DAYS[d.weekday()]),  # Sunday first, as en_US
    "HOUR": lambda d: (d.hour, d.hour),
    "HOUR_MINUTE": lambda d: ((d.hour, d.minute), f"{d.hour}:{d.minute:02d}"),
}


def _grouper(group: dict[str, Any]) -> Callable[[Value], tuple[Any, Value]]:
    rule = group.get("groupRule") or {}
    date_rule = (rule.get("dateTimeRule") or {}).get("type")
    if date_rule is None:
        return lambda value: (_order_key(value), value)
    label_of = _DATE_RULES[date_rule]

    def by_date(value: Value) -> tuple[Any, Value]:
        moment = _as_datetime(value)
        if moment is None:  # not a date: a group of its own, after the dates
            return (1, _order_key(value)), value
        key, label = label_of(moment)
        return (0, key), label

    return by_date


def _order_key(value: Value) -> tuple[int, Any]:
    # Sheets sorts numbers before text, text case-insensitively, blanks last.
    if value is None or value == "":
        return (3, "")
    if isinstance(value, bool):
        return (2, value)
    if _is_number(value):
        return (0, value)
    return (1, str(value).casefold())


# -- filters ----------------------------------------------------------------------------------------


def _relative_day(name: str, today: date) -> date:
    days = {"TODAY": 0, "YESTERDAY": 1, "TOMORROW": -1, "PAST_WEEK": 7}
    if name in days:
        return today - timedelta(days=days[name])
    if name == "PAST_MONTH":
        month, year = (today.month - 1, today.year) if today.month > 1 else (12, today.year - 1)
        return today.replace(year=year, month=month, day=min(today.day, 28))
    if name == "PAST_YEAR":
        return today.replace(year=today.year - 1, day=min(today.day, 28))
    raise ApiError(400, f"Invalid relativeDate: {name}")


def _condition_date(raw: dict[str, Any], today: date) -> date:
    if "relativeDate" in raw:
        return _relative_day(raw["relativeDate"], today)
    text = str(raw.get("userEnteredValue", ""))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(501, f"The stand-in evaluates dates as yyyy-mm-dd or relativeDate, not {text!r}") from None


def _number(raw: dict[str, Any]) -> float:
    try:
        return float(raw.get("userEnteredValue", ""))
    except ValueError:
        raise ApiError(501, "The stand-in evaluates number conditions on literal numbers only") from None


_CONDITIONS: dict[str, Callable[[Value, list[dict[str, Any]], date], bool]] = {
    "BLANK": lambda v, _a, _t: v in (None, ""),
    "NOT_BLANK": lambda v, _a, _t: v not in (None, ""),
    "TEXT_EQ": lambda v, a, _t: _text(v) == str(a[0].get("userEnteredValue", "")),
    "TEXT_NOT_EQ": lambda v, a, _t: _text(v) != str(a[0].get("userEnteredValue", "")),
    "TEXT_CONTAINS": lambda v, a, _t: str(a[0].get("userEnteredValue", "")).casefold() in _text(v).casefold(),
    "NUMBER_GREATER": lambda v, a, _t: _is_number(v) and v > _number(a[0]),  # type: ignore[operator]
    "NUMBER_GREATER_THAN_EQ": lambda v, a, _t: _is_number(v) and v >= _number(a[0]),  # type: ignore[operator]
    "NUMBER_LESS": lambda v, a, _t: _is_number(v) and v < _number(a[0]),  # type: ignore[operator]
    "NUMBER_LESS_THAN_EQ": lambda v, a, _t: _is_number(v) and v <= _number(a[0]),  # type: ignore[operator]
    "NUMBER_EQ": lambda v, a, _t: _is_number(v) and v == _number(a[0]),
    "DATE_BEFORE": lambda v, a, t: _on_day(v, lambda d: d < _condition_date(a[0], t)),
    "DATE_AFTER": lambda v, a, t: _on_day(v, lambda d: d > _condition_date(a[0], t)),
    "DATE_ON_OR_BEFORE": lambda v, a, t: _on_day(v, lambda d: d <= _condition_date(a[0], t)),
    "DATE_ON_OR_AFTER": lambda v, a, t: _on_day(v, lambda d: d >= _condition_date(a[0], t)),
    "DATE_EQ": lambda v, a, t: _on_day(v, lambda d: d == _condition_date(a[0], t)),
}
_VALUE_COUNT = {"BLANK": 0, "NOT_BLANK": 0}


def _on_day(value: Value, test: Callable[[date], bool]) -> bool:
    moment = _as_datetime(value)
    return moment is not None and test(moment.date())


def check_condition(condition: Any, where: str) -> None:
    if not isinstance(condition, dict):
        raise ApiError(400, f"{where}: a BooleanCondition object is required")
    kind = condition.get("type")
    if kind not in _CONDITIONS:
        raise ApiError(501, f"{where}: the stand-in does not evaluate condition type {kind!r}")
    values = condition.get("values") or []
    wanted = _VALUE_COUNT.get(kind, 1)
    if len(values) != wanted:
        raise ApiError(400, f"{where}: {kind} requires exactly {wanted} ConditionValue(s), got {len(values)}")
    for value in values:
        if "relativeDate" in value and not kind.startswith("DATE_"):
            raise ApiError(400, f"{where}: relativeDate is valid only for date conditions")


def condition_holds(condition: dict[str, Any], value: Value, today: date) -> bool:
    return _CONDITIONS[condition["type"]](value, condition.get("values") or [], today)


def _filters(pivot: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    specs = [
        (spec.get("columnOffsetIndex", 0), spec.get("filterCriteria") or {}) for spec in pivot.get("filterSpecs") or []
    ]
    # ``criteria`` is the deprecated map form; Google still applies it.
    specs += [(int(offset), criteria) for offset, criteria in (pivot.get("criteria") or {}).items()]
    return specs


# -- values -----------------------------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[[list[Value]], Value]] = {
    "COUNTA": lambda vs: sum(1 for v in vs if v not in (None, "")),
    "COUNT": lambda vs: sum(1 for v in vs if _is_number(v)),
    "COUNTUNIQUE": lambda vs: len({_text(v) for v in vs if v not in (None, "")}),
    "SUM": lambda vs: sum(v for v in vs if _is_number(v)),  # type: ignore[misc]
    "AVERAGE": lambda vs: statistics.fmean(n) if (n := [v for v in vs if _is_number(v)]) else None,  # type: ignore[misc]
    "MIN": lambda vs: min(n) if (n := [v for v in vs if _is_number(v)]) else 0,  # type: ignore[type-var]
    "MAX": lambda vs: max(n) if (n := [v for v in vs if _is_number(v)]) else 0,  # type: ignore[type-var]
}


def check(pivot: Any, source_width: int) -> None:
    """Raise ApiError for a pivot Google would reject, or one this stand-in cannot evaluate."""
    if not isinstance(pivot, dict):
        raise ApiError(400, "pivotTable must be an object")
    if "dataSourceId" in pivot:
        raise ApiError(501, "The stand-in has no data source (BigQuery) pivot tables")
    if "source" not in pivot:
        raise ApiError(400, "A pivot table requires a source range.")

    def offset(raw: Any, where: str) -> None:
        if not isinstance(raw, int) or not 0 <= raw < source_width:
            raise ApiError(400, f"{where}: column offset {raw!r} is outside the source range ({source_width} columns)")

    for axis in ("rows", "columns"):
        groups = pivot.get(axis) or []
        if len(groups) > 1:
            raise ApiError(501, f"The stand-in computes at most one {axis} group")
        for i, group in enumerate(groups):
            offset(group.get("sourceColumnOffset"), f"{axis}[{i}]")
            rule = group.get("groupRule") or {}
            if set(rule) - {"dateTimeRule"}:
                raise ApiError(501, f"{axis}[{i}]: the stand-in only evaluates dateTimeRule groups")
            kind = (rule.get("dateTimeRule") or {}).get("type")
            if rule and kind not in _DATE_RULES:
                raise ApiError(501, f"{axis}[{i}]: the stand-in does not evaluate dateTimeRule {kind!r}")
            bucket = group.get("valueBucket")
            if bucket is not None and bucket.get("buckets"):
                raise ApiError(501, f"{axis}[{i}]: the stand-in sorts by a value's totals only (no buckets)")
            if bucket is not None and bucket.get("valuesIndex", 0) >= len(pivot.get("values") or []):
                raise ApiError(400, f"{axis}[{i}]: valueBucket.valuesIndex names no value")
    values = pivot.get("values") or []
    if not values:
        raise ApiError(400, "A pivot table requires at least one value.")
    for i, value in enumerate(values):
        if "formula" in value:
            raise ApiError(501, f"values[{i}]: the stand-in does not evaluate calculated pivot values")
        offset(value.get("sourceColumnOffset"), f"values[{i}]")
        function = value.get("summarizeFunction")
        if function not in _FUNCTIONS:
            raise ApiError(501 if function else 400, f"values[{i}]: summarizeFunction {function!r} is not evaluated")
    if pivot.get("valueLayout", "HORIZONTAL") != "HORIZONTAL":
        raise ApiError(501, "The stand-in lays values out horizontally only")
    for i, (column, criteria) in enumerate(_filters(pivot)):
        offset(column, f"filterSpecs[{i}]")
        if criteria.get("condition") is not None:
            check_condition(criteria["condition"], f"filterSpecs[{i}].filterCriteria.condition")


def value_name(value: dict[str, Any], header: Sequence[Value]) -> str:
    if value.get("name"):
        return str(value["name"])
    column = value["sourceColumnOffset"]
    title = _text(header[column]) if column < len(header) else ""
    return f"{value['summarizeFunction']} of {title}"


def _compiled(condition: dict[str, Any], today: date) -> Callable[[Value], bool]:
    """A condition as a one-argument test, its operand worked out once (a pivot tests every row)."""
    kind, args = condition["type"], condition.get("values") or []
    if kind == "NOT_BLANK":
        return lambda v: v is not None and v != ""
    if kind == "BLANK":
        return lambda v: v is None or v == ""
    if kind.startswith("DATE_"):
        day = _condition_date(args[0], today)
        # Serial numbers of the day's start and of the next day's: a date test is a number test.
        start = (datetime(day.year, day.month, day.day) - EPOCH).days
        bounds = {
            "DATE_BEFORE": lambda n: n < start,
            "DATE_AFTER": lambda n: n >= start + 1,
            "DATE_ON_OR_BEFORE": lambda n: n < start + 1,
            "DATE_ON_OR_AFTER": lambda n: n >= start,
            "DATE_EQ": lambda n: start <= n < start + 1,
        }[kind]
        return lambda v: type(v) in (int, float) and bounds(round(v * 86400) / 86400)
    return lambda v: _CONDITIONS[kind](v, args, today)


def _predicate(criteria: dict[str, Any], today: date) -> Callable[[Value], bool]:
    condition = criteria.get("condition")
    visible = criteria.get("visibleValues")
    shown = {str(v) for v in visible} if visible is not None and not criteria.get("visibleByDefault") else None
    test = _compiled(condition, today) if condition else None
    if shown is None:
        return test or (lambda _v: True)
    if test is None:
        return lambda v: (v if type(v) is str else _text(v)) in shown
    return lambda v: test(v) and (v if type(v) is str else _text(v)) in shown


def compute(
    pivot: dict[str, Any],
    header: Sequence[Value],
    column: Callable[[int], list[Value]],
    rows: int,
    time_zone: str,
    now: datetime,
) -> list[list[Value]]:
    """The output grid of ``pivot``: ``column(offset)`` gives one source column below the header
    (``rows`` values, blanks included), so pivots over the same source share the reads."""
    today = now.astimezone(ZoneInfo(time_zone)).date()
    records: list[int] = list(range(rows))
    for offset, criteria in _filters(pivot):
        keep, values_of = _predicate(criteria, today), column(offset)
        records = [i for i in records if keep(values_of[i])]
    values = pivot["values"]
    names = [value_name(v, header) for v in values]

    def aggregate(indexes: list[int]) -> list[Value]:
        out = []
        for value in values:
            source = column(value["sourceColumnOffset"])
            out.append(_FUNCTIONS[value["summarizeFunction"]]([source[i] for i in indexes]))
        return out

    row_group = (pivot.get("rows") or [None])[0]
    col_group = (pivot.get("columns") or [None])[0]
    if row_group is None and col_group is None:
        return [list(names), aggregate(records)]

    def keys(group: dict[str, Any]) -> dict[int, tuple[Any, Value]]:
        key_of, source = _grouper(group), column(group["sourceColumnOffset"])
        # A group's key is worked out once per distinct value (typed: TRUE is not 1 in Sheets).
        distinct: dict[tuple[type, Value], tuple[Any, Value]] = {}
        out = {}
        for i in records:
            value = source[i]
            typed = (value.__class__, value)
            found = distinct.get(typed)
            if found is None:
                found = distinct[typed] = key_of(value)
            out[i] = found
        return out

    def buckets(group: dict[str, Any]) -> list[tuple[Any, Value, list[int]]]:
        found: dict[Any, tuple[Value, list[int]]] = {}
        for i, (key, label) in keys(group).items():
            found.setdefault(key, (label, []))[1].append(i)
        items = [(key, label, members) for key, (label, members) in found.items()]
        descending = group.get("sortOrder") == "DESCENDING"
        if group.get("valueBucket") is not None:
            index = group["valueBucket"].get("valuesIndex", 0)
            items.sort(key=lambda item: (_order_key(aggregate(item[2])[index]), item[0]), reverse=descending)
        else:
            items.sort(key=lambda item: item[0], reverse=descending)
        return items

    def label_of(group: dict[str, Any]) -> str:
        offset = group["sourceColumnOffset"]
        return str(group.get("label") or _text(header[offset] if offset < len(header) else None))

    if col_group is None:
        assert row_group is not None
        out: list[list[Value]] = [[label_of(row_group), *names]]
        for _key, label, members in buckets(row_group):
            out.append([label, *aggregate(members)])
        if row_group.get("showTotals"):
            out.append(["Grand Total", *aggregate(records)])
        return out

    if len(values) != 1:
        raise ApiError(501, "The stand-in lays out a column group with one value only")
    columns = buckets(col_group)
    col_totals = bool(col_group.get("showTotals"))
    top: list[Value] = [names[0], label_of(col_group)]
    if row_group is None:
        second: list[Value] = [label for _k, label, _m in columns] + (["Grand Total"] if col_totals else [])
        data: list[Value] = [aggregate(members)[0] for _k, _l, members in columns]
        if col_totals:
            data.append(aggregate(records)[0])
        return [top + [None] * max(0, len(second) - len(top)), second, data]
    second = [label_of(row_group), *(label for _k, label, _m in columns)] + (["Grand Total"] if col_totals else [])
    out = [top + [None] * (len(second) - len(top)), second]
    column_keys = [key for key, _l, _m in columns]
    column_of = keys(col_group)
    for _key, label, members in buckets(row_group):
        cells: dict[Any, list[int]] = {}
        for i in members:
            cells.setdefault(column_of[i][0], []).append(i)
        line: list[Value] = [label, *((aggregate(cells[k])[0] if k in cells else None) for k in column_keys)]
        if col_totals:
            line.append(aggregate(members)[0])
        out.append(line)
    if row_group.get("showTotals"):
        totals: list[Value] = ["Grand Total", *(aggregate(members)[0] for _k, _l, members in columns)]
        if col_totals:
            totals.append(aggregate(records)[0])
        out.append(totals)
    return out
