"""Cell values: what a write stores (RAW / USER_ENTERED), how reads render it, how it is saved."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack._http import ApiError, Request


@dataclass(frozen=True)
class Formula:
    """A USER_ENTERED '=...' string: kept apart from text so RAW '=...' strings stay plain text."""

    text: str


type Cell = bool | int | float | str | Formula | None


class Skip:
    """A null in ``values``: the API leaves that cell unchanged (an empty string clears it)."""


SKIP = Skip()


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def normalise_number(value: float) -> int | float:
    # Sheets stores doubles and answers 2, not 2.0, for whole numbers.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _raw_input(value: Any) -> Cell | Skip:
    if value is None:
        return SKIP
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return normalise_number(value)
    if isinstance(value, str):
        return value or None
    raise ValueError(f"{type(value).__name__}_value {json.dumps(value)}")


def _user_entered_input(value: Any) -> Cell | Skip:
    """Parse a string the way typing it into the UI would (numbers, booleans, formulas)."""
    if not isinstance(value, str):
        return _raw_input(value)
    if value.startswith("="):
        return Formula(value)
    if value.startswith("'"):  # a leading apostrophe forces text, as in the UI
        return value[1:] or None
    stripped = value.strip()
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    if _NUMBER.fullmatch(stripped):
        return normalise_number(float(stripped))
    if stripped.upper() in ("TRUE", "FALSE"):
        return stripped.upper() == "TRUE"
    return value or None


INPUT_OPTIONS: dict[str, Callable[[Any], Cell | Skip]] = {
    "RAW": _raw_input,
    "USER_ENTERED": _user_entered_input,
}


def formatted(value: Cell) -> Any:
    if value is None:
        return ""
    if isinstance(value, Formula):
        return value.text
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


def _unformatted(value: Cell) -> Any:
    if value is None:
        return ""
    return value.text if isinstance(value, Formula) else value


_RENDERERS: dict[str, Callable[[Cell], Any]] = {
    "FORMATTED_VALUE": formatted,
    "UNFORMATTED_VALUE": _unformatted,
    "FORMULA": _unformatted,  # formulas are never evaluated, so both show the formula text
}


def renderer(request: Request, name: str = "valueRenderOption") -> Callable[[Cell], Any]:
    option = request.param(name) or "FORMATTED_VALUE"
    if option not in _RENDERERS:
        raise ApiError(400, f"Invalid value at '{name}' ({option}); expected one of {sorted(_RENDERERS)}")
    return _RENDERERS[option]


def major_dimension(value: Any) -> str:
    major = value or "ROWS"
    if major not in ("ROWS", "COLUMNS"):
        raise ApiError(400, f"Invalid value at 'major_dimension' ({major}); expected ROWS or COLUMNS")
    return str(major)


def cell_to_json(value: Cell) -> Any:
    return {"formula": value.text} if isinstance(value, Formula) else value


def cell_from_json(value: Any) -> Cell:
    return Formula(value["formula"]) if isinstance(value, dict) else value


def extended_value(value: Cell) -> dict[str, Any]:
    if isinstance(value, Formula):
        return {"formulaValue": value.text}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int | float):
        return {"numberValue": value}
    return {"stringValue": value}


def from_extended_value(raw: Any) -> Cell:
    if not raw:
        return None
    if "formulaValue" in raw:
        return Formula(raw["formulaValue"])
    if "numberValue" in raw:
        return normalise_number(raw["numberValue"])
    if "boolValue" in raw:
        return bool(raw["boolValue"])
    return raw.get("stringValue") or None


def trim(cells: list[Any]) -> list[Any]:
    while cells and cells[-1] is None:
        cells.pop()
    return cells


def trim_rows(rows: list[list[Any]]) -> list[list[Any]]:
    while rows and not rows[-1]:
        rows.pop()
    return rows


def transpose(rows: list[list[Any]]) -> list[list[Any]]:
    width = max((len(cells) for cells in rows), default=0)
    return [[cells[c] if c < len(cells) else None for cells in rows] for c in range(width)]
