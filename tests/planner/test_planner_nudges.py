"""Cost-sheet follow-ups and hot-lead nudges: fire once, respect the nudge hours and the spacing.

Planning points are fixed IST times in the past; the data is placed relative to them, which is
exactly what a backfill of those points would see.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.planner.support import IST, run_planner

DAY = datetime(2026, 11, 20, 10, 0, tzinfo=IST)  # in hours
NIGHT = datetime(2026, 11, 20, 22, 0, tzinfo=IST)  # outside 09:00-21:00 IST
NEXT_MORNING = datetime(2026, 11, 21, 9, 0, tzinfo=IST)


def _ledger(penv, event_type: str, user_id: str, sent_at: datetime) -> None:
    """A follow-up another producer sent (through whatsapp_followups' ledger)."""
    penv.db.followup_deliveries.insert_one({
        "_id": f"evt-other-{user_id}-{event_type}", "event_type": event_type, "user_id": user_id,
        "state": "sent", "created_at": sent_at, "sent_at": sent_at, "updated_at": sent_at,
    })  # fmt: skip


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC)


def test_cost_sheet_and_hot_lead_fire_once_each_and_wait_for_nudge_hours(planner_dag, penv) -> None:
    at = _utc(DAY)
    # Cost-sheet rule.
    cost = penv.add_user("Cost Sheet", inquiry_type="cost_sheet")
    asked = penv.message(cost, at - timedelta(hours=3))
    penv.message(cost, at - timedelta(hours=3) + timedelta(minutes=1), role="assistant")
    recent = penv.add_user("Wrote Recently", inquiry_type="cost_sheet")
    penv.message(recent, at - timedelta(hours=5))
    penv.message(recent, at - timedelta(hours=1), as_string=True)  # same user, id stored as a string
    stale = penv.add_user("Too Old", inquiry_type="cost_sheet")
    penv.message(stale, at - timedelta(days=8))
    followed = penv.add_user("Already Followed", inquiry_type="cost_sheet")
    penv.message(followed, at - timedelta(hours=5))
    _ledger(penv, "cost_sheet_followup", followed, at - timedelta(hours=4))
    opted_out = penv.add_user("Opted Out", inquiry_type="cost_sheet", whatsapp_opt_in=False)
    penv.message(opted_out, at - timedelta(hours=3))
    not_cost = penv.add_user("General", inquiry_type="general")
    penv.message(not_cost, at - timedelta(hours=3))
    # Hot-lead rule.
    created = at - timedelta(days=20)
    hot = penv.add_user("Hot Lead", ranking="High", created_at=created)
    penv.message(hot, at - timedelta(days=3))
    active = penv.add_user("Hot Active", ranking="High", created_at=created)
    penv.message(active, at - timedelta(days=3))
    penv.message(active, at - timedelta(hours=30), role="assistant")
    nudged = penv.add_user("Hot Nudged", ranking="High", created_at=created)
    penv.message(nudged, at - timedelta(days=4))
    _ledger(penv, "inquiry_followup", nudged, at - timedelta(days=2))
    penv.add_user("Hot New", ranking="High", created_at=at - timedelta(hours=10))
    penv.add_user("Hot Opted Out", ranking="High", created_at=created, whatsapp_opt_in=False)
    both = penv.add_user("Hot Cost Sheet", ranking="High", inquiry_type="cost_sheet", created_at=created)
    both_asked = penv.message(both, at - timedelta(days=3))

    first = run_planner(planner_dag, DAY)
    again = run_planner(planner_dag, DAY + timedelta(minutes=5))

    assert first["nudges"] == "allowed"
    assert first["planned"] == {"site_visit_reminder": 0, "cost_sheet_followup": 2, "inquiry_followup": 1}
    assert again["planned"] == {"site_visit_reminder": 0, "cost_sheet_followup": 0, "inquiry_followup": 0}
    assert again["already_planned"] == {"site_visit_reminder": 0, "cost_sheet_followup": 2, "inquiry_followup": 1}
    assert first["held"]["cost_sheet_wrote_recently"] == 1
    assert first["held"]["cost_sheet_already_followed_up"] == 1
    assert first["held"]["one_nudge_per_run"] == 1
    bodies = {b["event_id"]: b for b in penv.receive_all()}
    assert set(bodies) == {
        f"cost_sheet_followup:{cost}:{asked}",
        f"cost_sheet_followup:{both}:{both_asked}",
        f"inquiry_followup:{hot}:2026-11-20",
    }
    assert all("scheduled_at" not in b for b in bodies.values())

    # At night nothing is nudged, not even a newly eligible buyer: it waits for the morning.
    late = penv.add_user("Night Owl", inquiry_type="cost_sheet")
    late_asked = penv.message(late, _utc(NIGHT) - timedelta(hours=3))
    night = run_planner(planner_dag, NIGHT)
    assert night["nudges"].startswith("waiting: outside 09:00-21:00 IST")
    assert night["planned"] == {"site_visit_reminder": 0, "cost_sheet_followup": 0, "inquiry_followup": 0}
    assert penv.receive_all() == []

    morning = run_planner(planner_dag, NEXT_MORNING)
    # The night owl's nudge waited for the morning; two more buyers have gone quiet long enough
    # since; the hot lead nudged yesterday is not nudged again within 7 days.
    assert morning["planned"] == {"site_visit_reminder": 0, "cost_sheet_followup": 2, "inquiry_followup": 1}
    assert morning["already_planned"]["cost_sheet_followup"] == 2
    assert morning["held"]["inquiry_sent_in_repeat_days"] == 2  # the hot lead, and the one the ledger has
    ids = {b["event_id"] for b in penv.receive_all()}
    assert f"cost_sheet_followup:{late}:{late_asked}" in ids
    assert {i.split(":")[1] for i in ids} == {late, recent, active}

    # Eight days on, still quiet: the hot lead gets its next nudge (and only that one).
    week_later = run_planner(planner_dag, DAY + timedelta(days=8))
    assert week_later["planned"]["inquiry_followup"] >= 1
    ids = [b["event_id"] for b in penv.receive_all()]
    assert f"inquiry_followup:{hot}:2026-11-28" in ids
    assert f"inquiry_followup:{nudged}:2026-11-28" in ids


def test_thresholds_come_from_the_variable(planner_dag, penv) -> None:
    at = _utc(DAY)
    user = penv.add_user("Cost Sheet", inquiry_type="cost_sheet")
    penv.message(user, at - timedelta(hours=3))
    penv.set_rules({"cost_sheet_followup": {"min_quiet_hours": 4}, "nudge_hours_ist": {"start": "10:30"}})

    held = run_planner(planner_dag, DAY)  # 10:00 is now outside the nudge hours
    assert held["nudges"].startswith("waiting: outside 10:30-21:00 IST")
    later = run_planner(planner_dag, DAY + timedelta(minutes=30))  # in hours, but 3.5 h quiet < 4 h
    assert later["planned"]["cost_sheet_followup"] == 0
    enough = run_planner(planner_dag, DAY + timedelta(minutes=90))
    assert enough["planned"]["cost_sheet_followup"] == 1
