"""batchUpdate requests on conditional formats: add and delete a rule, by index, per sheet.

Rules are stored in order on the sheet of their ranges and returned by ``spreadsheets.get``
under ``conditionalFormats``. Google's limits apply: every range of a rule on one grid, and a
boolean rule may only set bold, italic, strikethrough, underline, the text colour and the
background colour.
"""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError
from devstack.sheets_server.batch import batch_request
from devstack.sheets_server.embedded import conditional_formats
from devstack.sheets_server.model import Spreadsheet, grid_range
from devstack.sheets_server.pivots import check_condition

_FORMAT_KEYS = {"backgroundColor", "backgroundColorStyle", "textFormat"}
_TEXT_KEYS = {"bold", "italic", "strikethrough", "underline", "foregroundColor", "foregroundColorStyle"}


def _check_rule(book: Spreadsheet, rule: Any) -> int:
    if not isinstance(rule, dict) or not rule.get("ranges"):
        raise ApiError(400, "A conditional format rule needs at least one range.")
    sheets = {grid_range(book, rng).sheet.sheet_id for rng in rule["ranges"]}
    if len(sheets) != 1:
        raise ApiError(400, "All ranges of a conditional format rule must be on the same grid.")
    if ("booleanRule" in rule) == ("gradientRule" in rule):
        raise ApiError(400, "A conditional format rule sets exactly one of booleanRule or gradientRule.")
    if "gradientRule" in rule:
        raise ApiError(501, "The stand-in does not evaluate gradient rules")
    boolean = rule["booleanRule"]
    check_condition(boolean.get("condition"), "booleanRule.condition")
    fmt = boolean.get("format") or {}
    extra = set(fmt) - _FORMAT_KEYS | set(fmt.get("textFormat") or {}) - _TEXT_KEYS
    if extra:
        raise ApiError(
            400,
            "Conditional formatting can only set bold, italic, strikethrough, underline, foreground color and "
            f"background color; got {sorted(extra)}",
        )
    return sheets.pop()


@batch_request("addConditionalFormatRule")
def add_conditional_format_rule(book: Spreadsheet, params: dict[str, Any]) -> None:
    rule = copy.deepcopy(params.get("rule"))
    sheet = book.sheet_by_id(_check_rule(book, rule))
    rules = conditional_formats(sheet)
    index = params.get("index", 0)
    if not isinstance(index, int) or not 0 <= index <= len(rules):
        raise ApiError(400, f"Invalid index {index}: the sheet has {len(rules)} conditional format rules")
    rules.insert(index, rule)


@batch_request("deleteConditionalFormatRule")
def delete_conditional_format_rule(book: Spreadsheet, params: dict[str, Any]) -> dict[str, Any]:
    sheet = book.sheet_by_id(params.get("sheetId", 0))
    rules = conditional_formats(sheet)
    index = params.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(rules):
        raise ApiError(400, f"Invalid index {index}: the sheet has {len(rules)} conditional format rules")
    return {"deleteConditionalFormatRule": {"rule": rules.pop(index)}}
