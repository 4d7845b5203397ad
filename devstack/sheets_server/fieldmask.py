"""FieldMask parsing and application (the ``fields`` of update requests)."""

from __future__ import annotations

import copy
from typing import Any

from devstack._http import ApiError


def parse_field_mask(mask: str) -> list[str]:
    """``"a(b,c.d),e"`` -> ``["a.b", "a.c.d", "e"]`` (FieldMask paths plus the parenthesised form)."""
    paths: list[str] = []
    prefixes = [""]
    token = ""
    for char in mask + ",":
        if char == "(":
            prefixes.append(prefixes[-1] + token.strip() + ".")
            token = ""
        elif char in ",)":
            if token.strip():
                paths.append(prefixes[-1] + token.strip())
            token = ""
            if char == ")":
                if len(prefixes) == 1:
                    raise ApiError(400, f"Invalid field mask: {mask}")
                prefixes.pop()
        else:
            token += char
    if len(prefixes) != 1:
        raise ApiError(400, f"Invalid field mask: {mask}")
    return paths


def apply_field_mask(target: dict[str, Any], source: dict[str, Any], paths: list[str]) -> None:
    """Copy the masked fields of ``source`` into ``target``; a masked field absent from source is reset."""
    for path in paths:
        if path == "*":
            target.update(copy.deepcopy(source))
            continue
        *parents, leaf = path.split(".")
        src: Any = source
        dst = target
        for key in parents:
            src = src.get(key, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(key, {})
        if isinstance(src, dict) and leaf in src:
            dst[leaf] = copy.deepcopy(src[leaf])
        else:
            dst.pop(leaf, None)


def required_fields(params: dict[str, Any]) -> list[str]:
    fields = params.get("fields")
    if not fields or not isinstance(fields, str):
        raise ApiError(400, '\'fields\' is required (e.g. "title", "gridProperties.frozenRowCount" or "*")')
    return parse_field_mask(fields)
