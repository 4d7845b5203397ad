"""The WhatsApp stand-in's approved templates: a template send must match its approved structure,
as Meta checks it (132001 / 132000 / 132012), reached over HTTP with ``requests``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import clients
from devstack._http import serve_in_thread
from devstack.airflow_settings import read_settings
from devstack.whatsapp_server import WhatsAppServer, validate_message
from devstack.whatsapp_templates import load_templates
from leadflow.config import VAR_WHATSAPP_TEMPLATES
from leadflow.messaging.templates import TemplateConfig
from leadflow.messaging.whatsapp import template_payload

TOKEN = {"Authorization": "Bearer local-whatsapp-token"}
BROCHURE = "https://cdn.example.com/cost-sheet.pdf"
# A template with a DOCUMENT header and two body parameters, and one with a text header.
DOCUMENT_TEMPLATE = {
    "name": "cost_sheet_document_v1",
    "language": "en",
    "components": [
        {"type": "HEADER", "format": "DOCUMENT"},
        {"type": "BODY", "text": "Hello {{1}}, the cost sheet for {{2}} is attached."},
        {"type": "FOOTER", "text": "Leadflow Homes"},
    ],
}
TEXT_HEADER_TEMPLATE = {
    "name": "visit_text_header_v1",
    "language": "hi",
    "components": [
        {"type": "header", "format": "text", "text": "Visit on {{1}}"},
        {"type": "body", "text": "See you!"},
    ],
}


@pytest.fixture
def whatsapp(tmp_path: Path) -> Iterator[str]:
    server = WhatsAppServer(data_dir=tmp_path / "whatsapp")
    serve_in_thread(server)
    yield server.base_url
    server.stop()


def template(name: str, *body: str, language: str = "en", header: list[dict[str, Any]] | None = None) -> dict:
    components: list[dict[str, Any]] = []
    if header is not None:
        components.append({"type": "header", "parameters": header})
    components.append({"type": "body", "parameters": [{"type": "text", "text": text} for text in body]})
    return {
        "messaging_product": "whatsapp",
        "to": "919876543210",
        "type": "template",
        "template": {"name": name, "language": {"code": language}, "components": components},
    }


def document(link: str = BROCHURE) -> list[dict[str, Any]]:
    return [{"type": "document", "document": {"link": link}}]


def send(base: str, payload: dict[str, Any]) -> tuple[int, int | None, str | None]:
    """(HTTP status, Meta error code, error_data.details) of one send."""
    response = requests.post(f"{base}/v25.0/100000000000001/messages", json=payload, headers=TOKEN, timeout=5)
    if response.ok:
        return response.status_code, None, None
    error = response.json()["error"]
    assert error["message"].startswith(f"(#{error['code']}) ")  # Meta's title, after the code
    return response.status_code, error["code"], error.get("error_data", {}).get("details")


def test_by_default_the_projects_approved_templates_are_accepted_and_nothing_else(whatsapp: str) -> None:
    for name in ("site_visit_reminder_v1", "cost_sheet_followup_v1", "inquiry_followup_v1"):
        assert send(whatsapp, template(name, "Your visit is at 4:55 PM.")) == (200, None, None)
    assert send(whatsapp, template("any_template", "Hi")) == (
        404, 132001, "template name (any_template) does not exist in en",
    )  # fmt: skip
    # The same name in a language it was not approved in does not exist either.
    assert send(whatsapp, template("inquiry_followup_v1", "Hi", language="en_US")) == (
        404, 132001, "template name (inquiry_followup_v1) does not exist in en_US",
    )  # fmt: skip
    assert len(clients.outbox(whatsapp)) == 3


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (template("inquiry_followup_v1"),
         (400, 132000, "body: number of localizable_params (0) does not match the expected number of params (1)")),
        (template("inquiry_followup_v1", "a", "b"),
         (400, 132000, "body: number of localizable_params (2) does not match the expected number of params (1)")),
        # A header parameter for a template that has no header.
        (template("inquiry_followup_v1", "a", header=document()),
         (400, 132000, "header: number of localizable_params (1) does not match the expected number of params (0)")),
        # The media header left out: what a resend without the event's media would send.
        (template("cost_sheet_document_v1", "Asha", "2BHK"),
         (400, 132012, "header: Format mismatch, expected DOCUMENT, received UNKNOWN")),
        (template("cost_sheet_document_v1", "Asha", "2BHK",
                  header=[{"type": "image", "image": {"link": "https://cdn.example.com/a.png"}}]),
         (400, 132012, "header: Format mismatch, expected DOCUMENT, received IMAGE")),
        (template("cost_sheet_document_v1", "Asha", "2BHK", header=document("ftp://cdn.example.com/a.pdf")),
         (400, 100, "Param template['components'][header]['parameters'][0]['document']['link'] must be a valid "
                    "http(s) URL.")),
        (template("cost_sheet_document_v1", "Asha", "2BHK", header=[{"type": "document", "document": {}}]),
         (400, 131008, "The parameter template['components'][header]['parameters'][0]['document']['link'] or "
                       "template['components'][header]['parameters'][0]['document']['id'] is required.")),
        (template("cost_sheet_document_v1", "Asha", "2BHK", header=document()), (200, None, None)),
        (template("visit_text_header_v1", language="hi"),
         (400, 132000, "header: number of localizable_params (0) does not match the expected number of params (1)")),
        (template("visit_text_header_v1", language="hi", header=document()),
         (400, 132012, "header: Format mismatch, expected TEXT, received DOCUMENT")),
        (template("visit_text_header_v1", language="hi", header=[{"type": "text", "text": "Monday"}]),
         (200, None, None)),
    ],
)  # fmt: skip
def test_a_send_must_match_the_approved_structure(whatsapp: str, payload: dict, expected: tuple) -> None:
    clients.set_settings(whatsapp, templates=[*load_templates(), DOCUMENT_TEMPLATE, TEXT_HEADER_TEMPLATE])

    assert send(whatsapp, payload) == expected
    assert len(clients.outbox(whatsapp)) == (1 if expected[0] == 200 else 0)


def test_bare_names_check_the_name_only_and_an_empty_list_accepts_any(whatsapp: str) -> None:
    clients.set_settings(whatsapp, templates=["legacy_v1"])
    assert send(whatsapp, template("legacy_v1", "a", "b", language="de"))[0] == 200
    assert send(whatsapp, template("inquiry_followup_v1", "a"))[1] == 132001

    clients.set_settings(whatsapp, templates=[])
    assert send(whatsapp, template("whatever", "a", "b", header=document()))[0] == 200


def test_the_setting_takes_metas_listing_and_refuses_a_malformed_template(whatsapp: str) -> None:
    clients.set_settings(whatsapp, templates={"data": [DOCUMENT_TEMPLATE]})
    settings = requests.get(f"{whatsapp}/_control/settings", timeout=5).json()
    assert [t["name"] for t in settings["templates"]] == ["cost_sheet_document_v1"]
    assert send(whatsapp, template("inquiry_followup_v1", "a"))[1] == 132001
    for bad in (
        [
            {
                "name": "x",
                "language": "en",
                "components": [{"type": "HEADER", "format": "GIFX"}, {"type": "BODY", "text": "t"}],
            }
        ],
        [{"name": "x", "language": "en", "components": [{"type": "HEADER", "format": "IMAGE"}]}],  # no body
        [{"name": "x", "components": [{"type": "BODY", "text": "t"}]}],  # no language
        [42],
        "inquiry_followup_v1",
    ):
        with pytest.raises(clients.ControlError, match="setting 'templates'"):
            clients.set_settings(whatsapp, templates=bad)

    clients.reset(whatsapp)  # back to the project's approved set
    assert send(whatsapp, template("inquiry_followup_v1", "a"))[0] == 200


def test_the_default_set_mirrors_airflow_settings_and_fits_what_our_client_sends() -> None:
    """Every template the project configures is approved in the stand-in's default set, and the
    payload our client builds for it passes the stand-in's check: with the event's media exactly
    when the template has a media header."""
    config = TemplateConfig.parse(read_settings().variables[VAR_WHATSAPP_TEMPLATES])
    approved = load_templates()
    by_name = {(t["name"], t["language"]): t for t in approved if isinstance(t, dict)}
    assert sorted(by_name) == sorted({(t.name, t.language) for t in config.templates.values()})
    for configured in config.templates.values():
        header = next((c for c in by_name[configured.name, configured.language]["components"]
                       if c["type"] == "HEADER"), None)  # fmt: skip
        assert (header is not None and header["format"] != "TEXT") == configured.media_header
        media = (header["format"].lower(), BROCHURE) if header is not None and configured.media_header else None
        payload = template_payload("+919876543210", configured, "Your visit is at 4:55 PM.", media, callback_data="e")
        validate_message(json.loads(json.dumps(payload)), approved)
