"""``whatsapp_statuses`` end to end: real sends through ``whatsapp_followups`` (or the stand-in),
receipts posted by the WhatsApp stand-in to SQS, real runs of the receipts DAG (``dag.test()``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import requests
from bson import ObjectId

from devstack import clients
from devstack.services import WHATSAPP_APP_SECRET
from devstack.whatsapp_receipts import sign
from tests.followups.support import TEMPLATES, event, template_params
from tests.helpers import REPO
from tests.statuses.support import PHONE_NUMBER_ID, digits, run, status, summary_of

TOKEN = "local-whatsapp-token"


def test_async_131047_resends_the_approved_template_exactly_once(followups_dag, statuses_dag, env) -> None:
    # The buyer wrote 2 h ago (as far as MongoDB knows), so the follow-up goes out as free text;
    # Meta accepts it and then reports 131047, twice (webhooks are at least once).
    user_id, phone = env.add_user("Priya Sharma", wrote_ago=timedelta(hours=2))
    clients.set_settings(env.whatsapp, receipt_failures={digits(phone): 131047})
    env.receipt_faults({"action": "duplicate"})
    followup = event("inquiry_followup", user_id)
    env.enqueue(followup)
    run(followups_dag)
    [text] = env.outbox()
    assert text["type"] == "text"
    env.wait_receipts(2)

    first = run(statuses_dag)

    outbox = env.outbox()
    assert [m["type"] for m in outbox] == ["text", "template"]
    template = outbox[1]
    assert template["template"]["name"] == TEMPLATES["inquiry_followup"]
    assert template["to"] == digits(phone)
    assert template["biz_opaque_callback_data"] == followup["event_id"]
    doc = env.ledger()[followup["event_id"]]
    assert template_params(template) == [doc["text"]]
    assert doc["state"] == "sent"
    assert doc["wamid"] == text["wamid"]
    assert doc["resend"]["reason"] == "131047"
    assert doc["resend"]["outcome"] == "sent"
    assert doc["resend"]["wamid"] == template["wamid"]
    assert doc["resend"]["replaced_delivery"]["status"] == "failed"
    assert doc["resend"]["replaced_delivery"]["error_code"] == "131047"
    summary = summary_of(first)
    assert summary["resends"] == {"sent": 1}
    assert summary["statuses"] == {"failed": 2}
    assert summary["failed"] == 0

    # The template's own receipts follow: the event's delivery now tracks the resent message.
    env.wait_receipts(2 + 3)
    run(statuses_dag)
    doc = env.ledger()[followup["event_id"]]
    assert doc["delivery"]["status"] == "read"
    assert doc["delivery"]["wamid"] == template["wamid"]
    assert len(env.outbox()) == 2
    assert env.statuses_queue_counts() == (0, 0)
    assert env.alerts.read() == []  # a successful resend is not a problem


def test_async_131026_marks_the_event_failed_and_alerts_once(followups_dag, statuses_dag, env) -> None:
    gone_id, gone_phone = env.add_user("Rohan Iyer")
    ok_id, _ = env.add_user("Meera Nair")
    clients.set_settings(env.whatsapp, receipt_failures={digits(gone_phone): 131026})
    gone, ok = event("inquiry_followup", gone_id), event("inquiry_followup", ok_id)
    env.enqueue(gone)
    env.enqueue(ok)
    run(followups_dag)
    assert {doc["state"] for doc in env.ledger().values()} == {"sent"}  # Meta said 200 to both
    env.wait_receipts(1 + 3)

    result = run(statuses_dag)

    ledger = env.ledger()
    failed = ledger[gone["event_id"]]
    assert failed["state"] == "failed"
    assert (failed["error_code"], failed["reason"], failed["failed_async"]) == ("131026", "delivery_failed", True)
    assert failed["delivery"]["status"] == "failed"
    assert failed["delivery"]["error_code"] == "131026"
    assert ledger[ok["event_id"]]["state"] == "sent"
    assert ledger[ok["event_id"]]["delivery"]["status"] == "read"
    assert len(env.outbox()) == 2  # no resend for 131026
    [alert] = env.alerts.read()
    assert alert["failed_deliveries"] == 1
    assert alert["failure_codes"] == {"131026": 1}
    assert alert["event_ids"] == [gone["event_id"]]
    assert summary_of(result)["failed"] == 1


def test_duplicated_reordered_and_missing_receipts_never_move_delivery_back(followups_dag, statuses_dag, env) -> None:
    users = [env.add_user(name, wrote_ago=timedelta(hours=1)) for name in ("A Kumar", "B Rao", "C Das")]
    events = [event("inquiry_followup", user_id) for user_id, _ in users]
    for body in events:
        env.enqueue(body)
    # One send each gets its receipts newest first, each twice, or without "delivered".
    env.receipt_faults({"action": "reorder"}, {"action": "duplicate"}, {"action": "drop", "statuses": ["delivered"]})
    run(followups_dag)
    log = env.wait_receipts(3 + 6 + 2 + 1)

    result = run(statuses_dag)

    ledger = env.ledger()
    for body in events:
        delivery = ledger[body["event_id"]]["delivery"]
        assert (delivery["status"], delivery["rank"]) == ("read", 3), delivery
        assert delivery["sent_at"] <= delivery["read_at"]
        if "delivered_at" in delivery:
            assert delivery["sent_at"] <= delivery["delivered_at"] <= delivery["read_at"]
    assert sum("delivered_at" not in ledger[b["event_id"]]["delivery"] for b in events) == 1
    assert [r["outcome"] for r in log].count("dropped") == 1
    summary = summary_of(result)
    assert summary["receipts"] == 11
    assert summary["applied"]["stale"] == 5  # 2 reordered + 3 repeated

    # A late, repeated "sent" and "delivered" (Meta retrying its webhook) changes nothing.
    # Only a send whose "delivered" did arrive can have it repeated; which send lost it is up to send order.
    body = next(b for b in events if "delivered_at" in ledger[b["event_id"]]["delivery"])
    doc = ledger[body["event_id"]]
    late = int(time.time()) + 60
    recipient = env.outbox()[0]["to"]
    env.post_webhook(
        [status(doc["wamid"], "sent", late, recipient), status(doc["wamid"], "delivered", late, recipient)]
    )
    run(statuses_dag)
    again = env.ledger()[body["event_id"]]["delivery"]
    assert again == doc["delivery"]


def test_forged_or_unsigned_webhooks_go_to_the_statuses_dlq(statuses_dag, env) -> None:
    wamid = "wamid.forged-target"
    env.db.followup_deliveries.insert_one(
        {"_id": "evt-forged", "state": "sent", "wamid": wamid, "event_type": "inquiry_followup", "send_mode": "text"}
    )
    forged = [status(wamid, "failed", int(time.time()), "919800000001", "evt-forged", 131026)]
    env.post_webhook(forged, signature="sha256=" + "0" * 64)
    env.post_webhook(forged, signature=None)
    env.post_webhook(forged, signature=sign(b"another body", WHATSAPP_APP_SECRET))
    # Inbound chat (messages[]) on the same webhook is not a receipt: ignored, deleted.
    inbound = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_NUMBER_ID},
            "messages": [{"from": "919800000001", "id": "wamid.in", "timestamp": "1", "type": "text",
                          "text": {"body": "hi"}}]}}]}],
    }  # fmt: skip
    env.post_webhook(body=inbound)

    result = run(statuses_dag)

    dlq = env.statuses_dlq()
    assert sorted(m["reason_code"] for m in dlq) == ["bad_signature", "bad_signature", "missing_signature"]
    assert env.statuses_queue_counts() == (0, 0)
    doc = env.ledger()["evt-forged"]
    assert doc["state"] == "sent"
    assert "delivery" not in doc
    summary = summary_of(result)
    assert (summary["dead_lettered"], summary["ignored"], summary["receipts"]) == (3, 1, 0)
    [alert] = env.alerts.read()
    assert alert["dead_letter_reasons"] == {"bad_signature": 2, "missing_signature": 1}


def test_receipt_for_an_unknown_outcome_event_marks_it_sent(statuses_dag, env) -> None:
    # A send whose answer was lost: the follow-ups recorded unknown_outcome and no wamid.
    event_id = "evt-lost-answer"
    env.db.followup_deliveries.insert_one({
        "_id": event_id, "state": "unknown_outcome", "unknown_outcome_at": datetime.now(UTC),
        "event_type": "inquiry_followup", "user_id": str(ObjectId()), "text": "Hello", "send_mode": "text",
    })  # fmt: skip
    clients.inject_faults(env.whatsapp, [{"answer": "drop", "path_contains": "/messages"}])
    payload = {
        "messaging_product": "whatsapp", "to": "919800000042", "type": "text", "text": {"body": "Hello"},
        "biz_opaque_callback_data": event_id,
    }  # fmt: skip
    try:
        requests.post(
            f"{env.stack.whatsapp_url}/v25.0/{PHONE_NUMBER_ID}/messages",
            json=payload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5,
        )  # fmt: skip
        raise AssertionError("the answer should have been lost")
    except requests.ConnectionError:
        pass
    [sent] = env.outbox()
    env.wait_receipts(3)

    run(statuses_dag)

    doc = env.ledger()[event_id]
    assert doc["state"] == "sent"
    assert doc["confirmed_by"] == "receipt"
    assert doc["wamid"] == sent["wamid"]
    assert doc["delivery"]["status"] == "read"
    assert abs((doc["sent_at"] - datetime.now(UTC)).total_seconds()) < 120
    assert len(env.outbox()) == 1


def test_local_app_secret_matches_the_settings_file() -> None:
    import yaml

    settings = yaml.safe_load((REPO / "airflow_settings.yaml").read_text())["airflow"]
    [whatsapp] = [c for c in settings["connections"] if c["conn_id"] == "whatsapp_default"]
    assert whatsapp["conn_extra"]["app_secret"] == WHATSAPP_APP_SECRET


def test_accept_then_drop_is_sent_once_and_confirmed_by_its_receipt(followups_dag, statuses_dag, env) -> None:
    # WhatsApp applies the send and drops the connection before answering: the follow-ups must
    # not retry blind (unknown_outcome); the receipt then proves it was sent, so a later copy of
    # the event sends nothing.
    user_id, phone = env.add_user("Ira Bhatt", wrote_ago=timedelta(hours=1))
    body = event("inquiry_followup", user_id)
    env.enqueue(body)
    clients.inject_faults(env.whatsapp, [{"count": 1, "answer": "drop", "path_contains": "/messages"}])
    run(followups_dag)
    [delivered] = env.outbox()
    assert delivered["biz_opaque_callback_data"] == body["event_id"]
    assert env.ledger()[body["event_id"]]["state"] == "unknown_outcome"
    env.wait_receipts(3)

    run(statuses_dag)

    doc = env.ledger()[body["event_id"]]
    assert (doc["state"], doc["confirmed_by"], doc["wamid"]) == ("sent", "receipt", delivered["wamid"])
    assert doc["delivery"]["status"] == "read"
    env.enqueue(body)  # a later copy (or the held-back one, redelivered)
    run(followups_dag)
    assert [m["to"] for m in env.outbox()] == [phone]
