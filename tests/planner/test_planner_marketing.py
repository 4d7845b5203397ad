"""The planner respects Meta's marketing rules for nudges (MARKETING messages): a buyer who
stopped marketing messages (131050) or is within Meta's 24 h per-user marketing limit (131049)
is not nudged; their site-visit reminder (UTILITY) is planned as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leadflow.marketing import OPT_OUT, PAUSED_UNTIL
from tests.planner.support import IST, run_planner

DAY = datetime(2026, 11, 20, 10, 0, tzinfo=IST)


def test_marketing_holds_keep_nudges_back_and_leave_reminders_alone(planner_dag, penv) -> None:
    at = DAY.astimezone(UTC)
    now = datetime.now(UTC)
    created = at - timedelta(days=20)
    cost_ok = penv.add_user("Cost Ok", inquiry_type="cost_sheet")
    cost_opted_out = penv.add_user("Cost Opted Out", inquiry_type="cost_sheet", **{OPT_OUT: True})
    hot_paused = penv.add_user(
        "Hot Paused", ranking="High", created_at=created, **{PAUSED_UNTIL: now + timedelta(hours=20)}
    )
    hot_pause_over = penv.add_user(
        "Hot Pause Over", ranking="High", created_at=created, **{PAUSED_UNTIL: now - timedelta(minutes=1)}
    )
    for user in (cost_ok, cost_opted_out):
        penv.message(user, at - timedelta(hours=3))
    for user in (hot_paused, hot_pause_over):
        penv.message(user, at - timedelta(days=3))

    summary = run_planner(planner_dag, DAY)

    assert summary["planned"]["cost_sheet_followup"] == 1
    assert summary["planned"]["inquiry_followup"] == 1
    assert summary["held"]["marketing_opted_out"] == 1
    assert summary["held"]["marketing_limit"] == 1
    planned = {b["event_id"].split(":")[1] for b in penv.receive_all()}
    assert planned == {cost_ok, hot_pause_over}


def test_a_buyer_held_from_marketing_still_gets_the_site_visit_reminder(planner_dag, penv) -> None:
    now = datetime.now(UTC)
    point = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
    visit = point + timedelta(minutes=20)
    user = penv.add_visit(visit, **{OPT_OUT: True, PAUSED_UNTIL: now + timedelta(hours=20)})

    summary = run_planner(planner_dag, point)

    assert summary["planned"]["site_visit_reminder"] == 1
    assert [i.split(":")[1] for i in summary["planned_event_ids"]] == [user]
