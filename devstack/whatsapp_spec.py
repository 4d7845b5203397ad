"""Meta's own OpenAPI spec as the contract of ``POST /{version}/{phone_number_id}/messages``.

The body is validated against ``#/components/schemas/Message`` of the vendored spec
(``devstack/meta_spec/``, MIT, Meta's facebook/openapi). A body that does not match is answered
as Meta answers it: HTTP 400, code 100, "Invalid parameter", with the offending path in
``error_data.details``.

The spec is 1 MB of YAML: it is read and its validator built once per process
(:func:`message_validator`), never per request.

Where the spec disagrees with Meta's own examples and with the live API, exactly these are
allowed, and nothing else (``meta_spec/README.md`` says the same):

1. ``recipient_type`` is required in ``BaseMessageProperties``; Meta's examples and the API omit it.
2. a template's ``language.policy`` is required in ``LanguageObject``; Meta's examples and the
   API omit it.
3. ``biz_opaque_callback_data`` is missing from the message types, whose own parts forbid other
   keys; Meta's messages reference documents it as a top-level field of every message type, at
   most 512 characters.
4. Each message type is ``allOf: [BaseMessageProperties, {own part, additionalProperties: false}]``.
   JSON Schema applies ``additionalProperties`` per part, so the own part would refuse
   ``messaging_product`` and ``to``; the parts are merged into one object schema instead (the
   union of properties and required keys, the own part's definition winning for a shared key,
   ``additionalProperties: false`` kept).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).parent / "meta_spec" / "business-messaging-api_v23.0.yaml"
MESSAGE_SCHEMA = "Message"
CALLBACK_DATA = {"type": "string", "maxLength": 512}
_REF_PREFIX = "#/components/schemas/"


class SpecViolation(ValueError):
    """The body does not match Meta's spec; ``details`` names where (no values: they may be phone numbers)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader


def _resolve(schemas: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    ref = part.get("$ref")
    return schemas[ref.removeprefix(_REF_PREFIX)] if isinstance(ref, str) else part


def merge_all_of(schemas: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """One object schema from an ``allOf`` of object schemas (disagreement 4 above)."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for raw in schema["allOf"]:
        part = _resolve(schemas, raw)
        if "allOf" in part:
            part = merge_all_of(schemas, part)
        merged["properties"].update(part.get("properties") or {})
        merged["required"] += [key for key in part.get("required") or [] if key not in merged["required"]]
        if part.get("additionalProperties") is False:
            merged["additionalProperties"] = False
    return merged


def patched_components(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's components with the four documented disagreements applied, and nothing else."""
    components = copy.deepcopy(spec["components"])
    schemas = components["schemas"]
    for ref in schemas[MESSAGE_SCHEMA]["oneOf"]:
        name = ref["$ref"].removeprefix(_REF_PREFIX)
        merged = merge_all_of(schemas, schemas[name])
        merged["required"] = [key for key in merged["required"] if key != "recipient_type"]  # 1
        merged["properties"]["biz_opaque_callback_data"] = CALLBACK_DATA  # 3
        schemas[name] = merged
    language = schemas["LanguageObject"]
    language["required"] = [key for key in language["required"] if key != "policy"]  # 2
    return components


@functools.cache
def message_validator() -> Any:
    """The compiled validator of ``#/components/schemas/Message`` (built once per process)."""
    from openapi_schema_validator import OAS31Validator

    root = {"$ref": _REF_PREFIX + MESSAGE_SCHEMA, "components": patched_components(load_spec())}
    OAS31Validator.check_schema(root)
    return OAS31Validator(root)


def _where(error: Any) -> str:
    path = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    return f"body{path}" if path else "body"


def _for_type(message: dict[str, Any], validator: Any) -> Any:
    """The message type's own schema (the spec's discriminator), for a precise error detail."""
    mapping = validator.schema["components"]["schemas"][MESSAGE_SCHEMA]["discriminator"]["mapping"]
    ref = mapping.get(message.get("type"))
    return validator.evolve(schema={**validator.schema, "$ref": ref}) if ref else validator


def check_message(message: Any) -> None:
    """Raise :class:`SpecViolation` unless ``message`` matches Meta's ``Message`` schema."""
    validator = message_validator()
    if validator.is_valid(message):
        return
    import jsonschema.exceptions

    target = _for_type(message, validator) if isinstance(message, dict) else validator
    error = jsonschema.exceptions.best_match(target.iter_errors(message))
    if error is None:  # valid for its own type yet not for exactly one of Message's oneOf
        raise SpecViolation("body matches no single message type of the spec")
    keyword = error.validator
    if keyword == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties") or {}))
        raise SpecViolation(f"Unexpected key {', '.join(map(repr, extra))} on param {_where(error)}.")
    if keyword == "required":
        raise SpecViolation(f"{error.message.split(' is a required')[0]} is required on param {_where(error)}.")
    raise SpecViolation(f"Param {_where(error)} does not match the spec ({keyword}).")
