"""The WhatsApp stand-in's approved message templates, and the check of a template send against them.

Meta knows the structure of every approved template (created in WhatsApp Manager or through
``POST /{waba_id}/message_templates``): its name, its language and its components, an optional
``HEADER`` (``format`` TEXT, IMAGE, VIDEO or DOCUMENT) and a ``BODY`` whose ``text`` holds the
parameters ``{{1}}`` … ``{{n}}``. A send that does not match is refused at once (HTTP 4xx, no wamid):

* ``132001`` (404): no template of that name *in that language*: a wrong language code too;
* ``132000``: a component's parameter count differs: the body's ``{{n}}``, a header parameter
  sent for a template without one, a text header's parameter;
* ``132012``: a parameter's format differs: a media-header template sent without its header
  ("header: Format mismatch, expected IMAGE, received UNKNOWN"), or an image where the template
  has a DOCUMENT header.

The ``templates`` setting is a list of Meta's template objects::

    {"name": "cost_sheet_v1", "language": "en", "components": [
        {"type": "HEADER", "format": "DOCUMENT"}, {"type": "BODY", "text": "Hello {{1}}, ..."}]}

or of bare names (the older form: that name in any language, its structure unchecked), or Meta's
``GET /{waba_id}/message_templates`` answer ``{"data": [...]}``. An empty list accepts any
template. The default is the project's approved set in :data:`DEFAULT_TEMPLATES_FILE`, so a
stand-in started without settings is as strict as our WhatsApp account.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack._http import ApiError
from devstack.whatsapp_errors import meta_error

DEFAULT_TEMPLATES_FILE = Path(__file__).with_name("whatsapp_templates.json")
MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")
HEADER_FORMATS = ("TEXT", *MEDIA_FORMATS)
COMPONENT_TYPES = ("HEADER", "BODY", "FOOTER", "BUTTONS")
# What a body parameter may be besides text (Meta localises these two).
BODY_PARAMETER_TYPES = ("text", "currency", "date_time")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")

# One approved template as the setting keeps it (JSON-able: GET /_control/settings shows it).
Approved = str | dict[str, Any]


@dataclass(frozen=True)
class Structure:
    """What a send of one template must carry."""

    header: str | None  # TEXT, IMAGE, VIDEO, DOCUMENT, or None: no header
    header_params: int
    body_params: int

    @classmethod
    def of(cls, definition: Mapping[str, Any]) -> Structure:
        parts = {c["type"]: c for c in definition["components"]}
        header, body = parts.get("HEADER"), parts["BODY"]
        header_format = header["format"] if header else None
        header_params = _placeholders(header.get("text")) if header_format == "TEXT" else 0
        return cls(header_format, header_params, _placeholders(body["text"]))


def _placeholders(text: Any) -> int:
    return len(set(_PLACEHOLDER.findall(text))) if isinstance(text, str) else 0


# -- the setting ------------------------------------------------------------------------------


def _definition(raw: Mapping[str, Any]) -> dict[str, Any]:
    name, language = raw.get("name"), raw.get("language")
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        raise ValueError("a template needs a name and a language")
    components = raw.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise ValueError(f"template {name}: components must be a list of objects")
    normalised: list[dict[str, Any]] = []
    for component in components:
        kind = str(component.get("type") or "").upper()
        if kind not in COMPONENT_TYPES:
            raise ValueError(f"template {name}: component type must be one of {COMPONENT_TYPES}")
        item = {**component, "type": kind}
        if kind == "HEADER":
            item["format"] = str(component.get("format") or "").upper()
            if item["format"] not in HEADER_FORMATS:
                raise ValueError(f"template {name}: header format must be one of {HEADER_FORMATS}")
        if kind == "BODY" and not isinstance(component.get("text"), str):
            raise ValueError(f"template {name}: the body needs its text")
        normalised.append(item)
    kinds = [c["type"] for c in normalised]
    if kinds.count("BODY") != 1 or kinds.count("HEADER") > 1:
        raise ValueError(f"template {name}: one BODY and at most one HEADER")
    return {**raw, "components": normalised}


def templates_setting(value: Any) -> tuple[Approved, ...]:
    """The ``templates`` setting: bare names and/or Meta's template objects (see the module docstring)."""
    if isinstance(value, dict) and "data" in value:
        value = value["data"]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of template names or template objects, or {'data': [...]}")
    approved: list[Approved] = []
    for item in value:
        if isinstance(item, str) and item:
            approved.append(item)
        elif isinstance(item, dict):
            approved.append(_definition(item))
        else:
            raise ValueError("each template must be a name or a template object")
    return tuple(approved)


def load_templates(path: Path = DEFAULT_TEMPLATES_FILE) -> tuple[Approved, ...]:
    return templates_setting(json.loads(path.read_text(encoding="utf-8")))


# -- the check of a send ----------------------------------------------------------------------


def check_media(where: str, media: Any) -> None:
    """A media object (``{"link"}`` or ``{"id"}``) of a message or of a template header."""
    if not isinstance(media, dict):
        raise meta_error(400, 131008, f"The parameter {where}['link'] or {where}['id'] is required.")
    link, media_id = media.get("link"), media.get("id")
    if not link and not media_id:
        raise meta_error(400, 131008, f"The parameter {where}['link'] or {where}['id'] is required.")
    if link is not None and (not isinstance(link, str) or not link.startswith(("http://", "https://"))):
        raise meta_error(400, 100, f"Param {where}['link'] must be a valid http(s) URL.")


def _count_mismatch(component: str, sent: int, expected: int) -> ApiError:
    return meta_error(
        400,
        132000,
        f"{component}: number of localizable_params ({sent}) does not match the expected number of params ({expected})",
    )


def _format_mismatch(component: str, expected: str, received: str) -> ApiError:
    return meta_error(400, 132012, f"{component}: Format mismatch, expected {expected}, received {received}")


def _parameters(component: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return list((component or {}).get("parameters") or [])


def _check_header(expected: Structure, header: Mapping[str, Any] | None) -> None:
    params = _parameters(header)
    if expected.header in MEDIA_FORMATS:
        if not params:
            raise _format_mismatch("header", expected.header, "UNKNOWN")
        if len(params) != 1:
            raise _count_mismatch("header", len(params), 1)
        kind = str(params[0]["type"])
        if kind.upper() != expected.header:
            raise _format_mismatch("header", expected.header, kind.upper())
        check_media(f"template['components'][header]['parameters'][0]['{kind}']", params[0].get(kind))
        return
    if len(params) != expected.header_params:
        raise _count_mismatch("header", len(params), expected.header_params)
    for param in params:
        if param["type"] != "text":
            raise _format_mismatch("header", "TEXT", str(param["type"]).upper())


def check_template_send(
    name: str, code: str, components: Sequence[Mapping[str, Any]], approved: Sequence[Approved]
) -> None:
    """Raise Meta's error for a send of template ``name`` in language ``code`` that does not
    match the approved set; ``components`` are already well-formed (each a dict with a type)."""
    if not approved or name in approved:  # none configured, or a bare name: any structure
        return
    definition = next(
        (d for d in approved if isinstance(d, dict) and d["name"] == name and d["language"] == code), None
    )
    if definition is None:
        raise meta_error(404, 132001, f"template name ({name}) does not exist in {code}")
    expected = Structure.of(definition)
    sent = {str(c["type"]).lower(): c for c in components}
    _check_header(expected, sent.pop("header", None))
    body = _parameters(sent.pop("body", None))
    if len(body) != expected.body_params:
        raise _count_mismatch("body", len(body), expected.body_params)
    for param in body:
        if param["type"] not in BODY_PARAMETER_TYPES:
            raise _format_mismatch("body", "TEXT", str(param["type"]).upper())
    for kind, component in sent.items():  # buttons: none of our templates has a variable one
        if _parameters(component):
            raise _count_mismatch(kind, len(_parameters(component)), 0)
