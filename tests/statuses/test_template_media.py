"""Templates approved with a media header, end to end: real runs of ``whatsapp_followups`` and
``whatsapp_statuses`` (``dag.test()``) against the WhatsApp stand-in, which checks each template
send against the structure the template was approved with (as Meta does: 132012 for a media
header left out)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack import clients
from devstack.whatsapp_templates import load_templates
from leadflow.config import VAR_WHATSAPP_TEMPLATES
from tests.followups.support import event, template_params
from tests.statuses.support import ReceiptsEnv, digits, run, status, summary_of

BROCHURE = "https://cdn.example.com/cost-sheets/2bhk-tower-b.pdf"
# The cost-sheet follow-up as a template with a DOCUMENT header, approved on the stand-in and
# configured for our client (leadflow_whatsapp_templates) with media_header.
DOCUMENT_TEMPLATE = {
    "name": "cost_sheet_document_v1",
    "language": "en",
    "components": [
        {"type": "HEADER", "format": "DOCUMENT"},
        {"type": "BODY", "text": "Hello from Leadflow Homes. {{1}} The cost sheet is attached."},
    ],
}


@pytest.fixture
def document_template(env: ReceiptsEnv) -> Iterator[None]:
    from airflow.models import Variable

    original = Variable.get(VAR_WHATSAPP_TEMPLATES)
    config = json.loads(original)
    config["templates"]["cost_sheet_followup"] = {"name": DOCUMENT_TEMPLATE["name"], "media_header": True}
    Variable.set(VAR_WHATSAPP_TEMPLATES, json.dumps(config))
    clients.set_settings(env.whatsapp, templates=[*load_templates(), DOCUMENT_TEMPLATE])
    try:
        yield
    finally:
        Variable.set(VAR_WHATSAPP_TEMPLATES, original)


def header_params(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in message["template"]["components"] if c["type"] == "header" for p in c["parameters"]]


def test_the_131047_resend_carries_the_events_media_as_the_template_header(
    followups_dag, statuses_dag, env, document_template
) -> None:
    # The buyer wrote 2 h ago, so the cost sheet goes out as a free-form document; Meta accepts
    # it, then reports 131047. The one resend is the template, with the same document.
    user_id, phone = env.add_user("Kavya Rao", wrote_ago=timedelta(hours=2))
    clients.set_settings(env.whatsapp, receipt_failures={digits(phone): 131047})
    followup = event("cost_sheet_followup", user_id, media={"type": "document", "url": BROCHURE, "caption": "2BHK"})
    env.enqueue(followup)
    run(followups_dag)
    [sent] = env.outbox()
    assert (sent["type"], sent["document"]["link"]) == ("document", BROCHURE)
    assert env.ledger()[followup["event_id"]]["media"] == {"type": "document", "url": BROCHURE}
    env.wait_receipts(1)

    result = run(statuses_dag)

    assert summary_of(result)["resends"] == {"sent": 1}
    outbox = env.outbox()
    assert [m["type"] for m in outbox] == ["document", "template"]
    template = outbox[1]
    assert template["template"]["name"] == DOCUMENT_TEMPLATE["name"]
    assert header_params(template) == [{"type": "document", "document": {"link": BROCHURE}}]
    doc = env.ledger()[followup["event_id"]]
    assert template_params(template) == [doc["text"]]
    assert (doc["resend"]["outcome"], doc["resend"]["wamid"]) == ("sent", template["wamid"])
    assert [c["status"] for c in env.send_calls()] == [200, 200]  # no refused attempt on the way
    assert env.alerts.read() == []


def test_a_media_header_template_for_an_event_without_media_fails_that_message_with_its_reason(
    followups_dag, env, document_template
) -> None:
    # Nobody wrote within 24 h: both go out as the template. The one without media cannot (Meta
    # would answer 132012): it fails with the reason, unsent; the one with media is sent.
    bare_id, _ = env.add_user("Arjun Mehta")
    with_media_id, _ = env.add_user("Sara Khan")
    bare = event("cost_sheet_followup", bare_id, event_id="evt-no-media")
    with_media = event("cost_sheet_followup", with_media_id, media={"type": "document", "url": BROCHURE})
    env.enqueue(bare)
    env.enqueue(with_media)

    run(followups_dag)

    [template] = env.outbox()
    assert template["biz_opaque_callback_data"] == with_media["event_id"]
    assert header_params(template) == [{"type": "document", "document": {"link": BROCHURE}}]
    assert len(env.send_calls()) == 1  # the bare one was never sent to be refused
    doc = env.ledger()["evt-no-media"]
    assert doc["state"] == "failed"
    assert doc["reason"].startswith("template_needs_media: template cost_sheet_document_v1 has a media header")
    [dead] = env.dlq()
    assert (dead["reason_code"], dead["event_id"]) == ("template_needs_media", "evt-no-media")
    assert env.queue_counts() == (0, 0)  # not left to be retried forever
    [alert] = env.alerts.read()
    assert alert["dead_letter_reasons"] == {"template_needs_media": 1}
    assert alert["event_ids"] == ["evt-no-media"]


def test_a_resend_that_would_lack_its_media_header_fails_the_event_without_a_send(
    statuses_dag, env, document_template
) -> None:
    # An event sent before the ledger kept media (no "media" field): its template resend would
    # go without the header Meta requires, so it is not attempted.
    event_id = "evt-sent-before-media"
    env.db.followup_deliveries.insert_one({
        "_id": event_id, "state": "sent", "wamid": "wamid.old", "send_mode": "text",
        "event_type": "cost_sheet_followup", "user_id": "u1", "text": "Here is your cost sheet.",
        "sent_at": datetime.now(UTC),
    })  # fmt: skip
    env.post_webhook([status("wamid.old", "failed", int(time.time()), "919800000077", event_id, 131047)])

    result = run(statuses_dag)

    assert summary_of(result)["resends"] == {"failed": 1}
    assert env.send_calls() == []
    doc = env.ledger()[event_id]
    assert (doc["state"], doc["reason"], doc["error_code"]) == ("failed", "resend_impossible", "131047")
    assert "resend" not in doc  # never claimed: nothing was sent
