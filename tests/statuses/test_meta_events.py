"""What Meta's webhooks say about money and templates, end to end: sends through
``whatsapp_followups``, receipts (with ``pricing``) and ``template_category_update`` webhooks
posted by the WhatsApp stand-in, real runs of ``whatsapp_statuses``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from bson import ObjectId

from devstack import clients
from leadflow.marketing import OPT_OUT, PAUSED_UNTIL
from leadflow.statuses.meta_events import DEFAULT_PRICES, TEMPLATE_EVENTS
from tests.followups.support import VISIT_AT, event
from tests.statuses.support import digits, run, summary_of

PRICES_VAR = "leadflow_whatsapp_price_per_message"


def test_pricing_is_stored_per_message_and_summed_per_category(followups_dag, statuses_dag, env) -> None:
    reminder_user, _ = env.add_user("Asha Rao")  # never wrote: templates
    nudge_user, _ = env.add_user("Dev Shah")
    chat_user, _ = env.add_user("Ira Sen", wrote_ago=timedelta(hours=1))  # window open: free-form text
    reminder = event("site_visit_reminder", reminder_user, scheduled_at=VISIT_AT)
    nudge = event("inquiry_followup", nudge_user)
    chat = event("cost_sheet_followup", chat_user)
    for body in (reminder, nudge, chat):
        env.enqueue(body)
    run(followups_dag)
    env.wait_receipts(3 * 3)

    first = summary_of(run(statuses_dag))

    ledger = env.ledger()
    assert ledger[reminder["event_id"]]["delivery"]["pricing"] == {
        "category": "utility", "type": "regular", "pricing_model": "PMP", "billable": True,
    }  # fmt: skip
    assert ledger[nudge["event_id"]]["delivery"]["pricing"]["category"] == "marketing"
    assert ledger[chat["event_id"]]["delivery"]["pricing"] == {
        "category": "service", "type": "free_customer_service", "pricing_model": "PMP", "billable": False,
    }  # fmt: skip
    # Three receipts per message, each message counted once; the free service message costs 0.
    assert first["pricing"]["by_category"] == {
        "marketing": {"messages": 1, "billable": 1, "estimated_cost_usd": DEFAULT_PRICES["marketing"]},
        "service": {"messages": 1, "billable": 0, "estimated_cost_usd": 0.0},
        "utility": {"messages": 1, "billable": 1, "estimated_cost_usd": DEFAULT_PRICES["utility"]},
    }
    expected = DEFAULT_PRICES["marketing"] + DEFAULT_PRICES["utility"]
    assert first["pricing"]["estimated_cost_usd"] == pytest.approx(expected)

    # The same receipts again (Meta delivers at least once): nothing is counted twice.
    env.receipt_faults({"action": "duplicate"})
    again = event("inquiry_followup", env.add_user("Kabir Das")[0])
    env.enqueue(again)
    run(followups_dag)
    env.wait_receipts(3 * 3 + 6)
    second = summary_of(run(statuses_dag))
    assert second["pricing"]["by_category"] == {
        "marketing": {"messages": 1, "billable": 1, "estimated_cost_usd": DEFAULT_PRICES["marketing"]}
    }


def test_the_price_table_comes_from_the_variable(followups_dag, statuses_dag, env, airflow_settings: Any) -> None:
    from airflow.models import Variable

    Variable.set(PRICES_VAR, '{"marketing": 0.5}')
    try:
        env.enqueue(event("inquiry_followup", env.add_user("Mira Jain")[0]))
        run(followups_dag)
        env.wait_receipts(3)
        summary = summary_of(run(statuses_dag))
    finally:
        Variable.delete(PRICES_VAR)

    assert summary["pricing"]["by_category"]["marketing"]["estimated_cost_usd"] == 0.5


def test_a_reminder_template_recategorised_to_marketing_is_recorded_and_alerted_once(statuses_dag, env) -> None:
    answer = requests.post(
        f"{env.whatsapp}/_control/template_category",
        json={"name": "site_visit_reminder_v1", "language": "en", "category": "MARKETING"},
        timeout=5,
    )
    assert answer.json()["previous_category"] == "UTILITY"
    env.wait_receipts(1)

    summary = summary_of(run(statuses_dag))

    [update] = summary["template_category_updates"]
    assert (update["name"], update["previous_category"], update["new_category"]) == (
        "site_visit_reminder_v1", "UTILITY", "MARKETING",
    )  # fmt: skip
    [stored] = env.db[TEMPLATE_EVENTS].find()
    assert (stored["name"], stored["new_category"]) == ("site_visit_reminder_v1", "MARKETING")
    [alert] = env.alerts.read()
    assert "template category changed (site_visit_reminder_v1)" in alert["_subject"]
    assert alert["changes"][0]["configured_otherwise"] == ["site_visit_reminder"]
    assert "per-user marketing limit" in alert["effect"]
    assert env.statuses_queue_counts() == (0, 0)


def test_a_redelivered_category_webhook_is_neither_recorded_nor_alerted_twice(statuses_dag, env) -> None:
    from devstack.whatsapp_receipts import template_category_body

    body = template_category_body(
        {"id": 777, "name": "inquiry_followup_v1", "language": "en"}, "MARKETING", "UTILITY", "100000000000002"
    )
    env.post_webhook(body=body)
    env.post_webhook(body=body)

    summary = summary_of(run(statuses_dag))

    assert len(summary["template_category_updates"]) == 1
    assert env.db[TEMPLATE_EVENTS].count_documents({}) == 1
    [alert] = env.alerts.read()
    assert alert["changes"][0]["configured_otherwise"] == ["inquiry_followup"]


@pytest.mark.parametrize(("code", "field"), [(131049, PAUSED_UNTIL), (131050, OPT_OUT)])
def test_an_asynchronous_marketing_refusal_is_kept_on_the_buyer(followups_dag, statuses_dag, env, code, field) -> None:
    user_id, phone = env.add_user("Nisha Pal")
    clients.set_settings(env.whatsapp, receipt_failures={digits(phone): code})
    nudge = event("cost_sheet_followup", user_id)
    env.enqueue(nudge)
    run(followups_dag)
    env.wait_receipts(1)

    summary = summary_of(run(statuses_dag))

    user = env.db.users.find_one({"_id": ObjectId(user_id)})
    assert field in user
    if code == 131049:
        assert user[PAUSED_UNTIL].replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=23)
    assert summary["marketing_holds"] == {"marketing_limit" if code == 131049 else "marketing_opted_out": 1}
    # The next nudge to that buyer is skipped at send time.
    later = event("inquiry_followup", user_id)
    env.enqueue(later)
    run(followups_dag)
    assert env.ledger()[later["event_id"]]["state"] == "skipped"
    assert len(env.outbox()) == 1
