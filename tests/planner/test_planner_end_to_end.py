"""Planner → SQS (delayed, the reminders' queue) → ``whatsapp_reminders`` → WhatsApp outbox, with real DAG runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from devstack import clients
from tests.helpers import load_dag
from tests.planner.support import IST, floor5, run_planner


def _template_text(message: dict) -> str:
    if message["type"] == "text":
        return message["text"]["body"]
    return " ".join(
        p.get("text", "") for c in message["template"]["components"] if c["type"] == "body" for p in c["parameters"]
    )


def test_reminder_reaches_the_outbox_with_the_visit_time_in_ist_not_before_t_minus_15(
    planner_dag, penv, airflow_settings
) -> None:
    reminders = load_dag("whatsapp_reminders")
    # The first dag.test() of a session syncs the DAG bundle (tens of seconds here): do that in a
    # run with nothing to plan, so the timed run below starts right away.
    run_planner(planner_dag, floor5(datetime.now(UTC)) - timedelta(minutes=5))
    # A visit 15 min + 30 s from now: the reminder is due in ~30 s, so SQS holds it that long.
    visit = (datetime.now(UTC) + timedelta(minutes=15, seconds=30)).replace(microsecond=0)
    due = visit - timedelta(minutes=15)
    user = penv.add_visit(visit, name="Meera Nair")
    penv.message(user, datetime.now(UTC) - timedelta(hours=1))  # wrote an hour ago: free-form text

    # The run whose window (planning point + 5 min) holds the due time. Usually the current one;
    # in the last 30 s of a 5-minute period it is the next one, whose point is a few seconds ahead.
    summary = run_planner(planner_dag, floor5(due))
    assert summary["planned"]["site_visit_reminder"] == 1
    assert 0 < summary["reminder_delay_seconds"][0] <= 30
    # On the reminders' own queue, never behind the nudges.
    counts = penv.queue_counts(penv.stack.reminders_queue_url)
    if datetime.now(UTC) < due - timedelta(seconds=2):
        assert (counts["delayed"], counts["visible"]) == (1, 0), counts
    assert penv.queue_counts(penv.stack.queue_url) == {"visible": 0, "delayed": 0, "in_flight": 0}

    # The consumer's long poll waits for the message to become visible, then sends it.
    run = reminders.test(run_conf={"max_wait_seconds": 90})
    assert run.state == "success"
    [message] = clients.outbox(penv.stack.control_url("whatsapp"))
    delivered = datetime.fromisoformat(message["received_at"].replace("Z", "+00:00"))
    assert delivered >= due, (delivered, due)
    text = _template_text(message)
    # The visit time in IST, in whichever wording the message uses ("06:13 PM" / "6:13 PM").
    local = visit.astimezone(IST)
    clock = rf"\b0?{local.hour % 12 or 12}:{local.minute:02d}\s*{local:%p}"
    assert re.search(clock, text), text
    assert re.search(rf"\b0?{local.day}\b", text), text
    assert local.strftime("%b") in text, text
    ledger = penv.db.followup_deliveries.find_one({"_id": summary["planned_event_ids"][0]})
    assert ledger["state"] == "sent"
    assert ledger["text_source"] == "openai"  # the primary path, not the template fallback
    # The deadline is the planner's due time; the lateness is what the send took after it.
    assert ledger["deadline_at"] == due
    assert 0 <= ledger.get("late_seconds", 0) <= (delivered - due).total_seconds() + 5
    assert penv.queue_counts() == {"visible": 0, "delayed": 0, "in_flight": 0}
