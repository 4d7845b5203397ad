"""Request bodies checked against the Sheets v4 and Drive v3 discovery documents.

The documents are the ones googleapiclient ships (``googleapiclient/discovery_cache/documents``),
so the stand-in refuses what Google would: an unknown field or a value of the wrong type is a 400
in Google's wording (field paths in snake_case, as Google's ESF reports them).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from devstack._http import ApiError

_INT_TYPES = {"int32": "TYPE_INT32", "uint32": "TYPE_UINT32", "int64": "TYPE_INT64", "uint64": "TYPE_UINT64"}


@cache
def document(api: str) -> dict[str, Any]:
    name = {"sheets": "sheets.v4.json", "drive": "drive.v3.json"}[api]
    text = resources.files("googleapiclient.discovery_cache.documents").joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _invalid(path: str, kind: str, value: Any) -> ApiError:
    message = f"Invalid value at '{path}' ({kind}), {json.dumps(value)}"
    return _bad_request(path, message)


def _bad_request(path: str, message: str) -> ApiError:
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": path, "description": message}]}]  # fmt: skip
    return ApiError(400, message, extra={"details": details})


def validate(api: str, schema_name: str, body: Any) -> None:
    """Raise ApiError(400) unless ``body`` fits schema ``schema_name`` of ``api``'s document."""
    _check(document(api)["schemas"], {"$ref": schema_name}, body, "")


def _check(schemas: dict[str, Any], schema: dict[str, Any], value: Any, path: str) -> None:
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if value is None:
        return  # JSON null: the field's default, as proto3 JSON reads it
    if kind == "object":
        if not isinstance(value, dict):
            raise _invalid(path, "TYPE_MESSAGE", value)
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{_snake(key)}" if path else _snake(key)
            if properties is not None and key in properties:
                _check(schemas, properties[key], item, where)
            elif extra is not None:
                _check(schemas, extra, item, f"{path}[{key}]")
            elif properties is not None:
                at = f" at '{path}'" if path else ""
                raise _bad_request(path, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')
    elif kind == "array":
        if not isinstance(value, list):
            raise _invalid(path, "TYPE_LIST", value)
        for index, item in enumerate(value):
            _check(schemas, schema.get("items", {}), item, f"{path}[{index}]")
    elif kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and re.fullmatch(r"-?\d+", value)
        )
        if not ok:
            raise _invalid(path, _INT_TYPES.get(schema.get("format", "int32"), "TYPE_INT32"), value)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _invalid(path, "TYPE_DOUBLE", value)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(path, "TYPE_BOOL", value)
    elif kind == "string":
        if "enum" in schema:
            if value not in schema["enum"]:
                raise _invalid(path, "TYPE_ENUM", value)
        elif schema.get("format") in ("int64", "uint64"):
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise _invalid(path, _INT_TYPES[schema["format"]], value)
        elif not isinstance(value, str):
            raise _invalid(path, "TYPE_STRING", value)
    # "any" and untyped schemas (e.g. ValueRange.values items) accept every JSON value.
