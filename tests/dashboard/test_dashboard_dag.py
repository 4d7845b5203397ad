"""The dashboard through ``dag.test()``: built once, right counts, left alone, and drawn in a browser.

One demo day of on-time runs (seeded like ``make run``, relative to now), after one hour ten days
earlier that builds the dashboard (and leaves a lead that has not chatted this week). The expected pivot
counts are computed here from the report rows with ``collections.Counter``, not by the stand-in's
pivot code.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest

from devstack import clients
from devstack.seed import IST, SeedSpec, seed_database, written_at
from leadflow.reports import dashboard
from tests.helpers import load_dag, sheets_service, task_states

SESSION_TITLE = "Leadflow — Session-wise report"
LEADS_TITLE = "Leadflow — Consolidated report"
YESTERDAY = (datetime.now(IST) - timedelta(days=1)).date()
OLD_DAY = YESTERDAY - timedelta(days=10)  # a lead that has not chatted this week (after the DAG's start_date)
RUN_HOURS = [datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, h, tzinfo=IST) for h in range(9, 22)]
OLD_RUN = datetime(OLD_DAY.year, OLD_DAY.month, OLD_DAY.day, 12, tzinfo=IST)  # the run of 11:00-12:00
EPOCH = datetime(1899, 12, 30)
NUM_RETRIES = 5  # google_cloud_default's num_retries (GoogleBaseHook's default), as the DAG's client uses


def _old_month_docs(users: list[dict]) -> list[dict]:
    """Two sessions on OLD_DAY, 11:05-11:20 IST, covered by the run of OLD_RUN (11:00-12:00)."""
    docs = []
    for n, user in enumerate(users[:2]):
        start = datetime(OLD_DAY.year, OLD_DAY.month, OLD_DAY.day, 11, 5 + 5 * n, tzinfo=IST)
        for k in range(3):
            docs.append({
                "_id": written_at(start), "user_id": user["_id"], "session_id": f"old-{n}", "role": "user",
                "text": "hello", "timestamp": (start + timedelta(minutes=k)).astimezone(UTC), "intent": "Pricing",
            })  # fmt: skip
    return docs


def _xcom(run, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one_or_none()
        )
        return XComModel.deserialize_value(row) if row else None


def sheets_quota_off(stack) -> None:
    """This module replays a day of hourly runs, and inspects the sheets after each, in about a
    minute: over ten times production's pace, so past Google's 60 reads per minute per user,
    which the stand-in enforces. What it checks is which calls our code makes; the quota and our
    client's backoff under it are tested in tests/reports/test_sheets_quota.py."""
    clients.set_settings(stack.control_url("sheets"), quota=None)


@pytest.fixture(autouse=True)
def _no_sheets_quota(stack) -> None:
    sheets_quota_off(stack)  # again, in case another test reset the stand-in in between


def _run(dag, stack, when: datetime, **conf: Any) -> dict[str, Any]:
    calls_before = len(clients.calls(stack.control_url("sheets")))
    run = dag.test(logical_date=when, run_conf=conf or None)
    assert run.state == "success", (when, task_states(run))
    # Calls on existing spreadsheets (Drive's create and sharing calls are not Sheets calls).
    # A request the quota refused (429) is sent again by googleapiclient's backoff: the answered
    # ones are the requests our code made. This module runs a day of hours in about a minute, so
    # it does pass the stand-in's (Google's) 60 reads per minute per user.
    new = clients.calls(stack.control_url("sheets"))[calls_before:]
    calls = sum(1 for call in new if call["path"].startswith("/v4/spreadsheets/") and call["status"] != 429)
    return {
        "sessions": _xcom(run, "write_sessions"),
        "consolidated": _xcom(run, "write_consolidated"),
        "sheets_calls": calls,
    }


def _book(stack, title: str) -> dict[str, Any]:
    ids = [b["spreadsheetId"] for b in clients.spreadsheet_list(stack.control_url("sheets")) if b["title"] == title]
    assert len(ids) == 1, ids
    service = sheets_service(stack).spreadsheets()
    # Our reads count against the same per-minute quota: retried the way the report's client does.
    meta = service.get(spreadsheetId=ids[0]).execute(num_retries=NUM_RETRIES)
    titles = [s["properties"]["title"] for s in meta["sheets"]]
    values = (
        service.values()
        .batchGet(spreadsheetId=ids[0], ranges=[f"'{t}'" for t in titles], valueRenderOption="UNFORMATTED_VALUE")
        .execute(num_retries=NUM_RETRIES)
    )
    tabs = {t: v.get("values", []) for t, v in zip(titles, values["valueRanges"], strict=True)}
    return {"id": ids[0], "meta": meta, "tabs": tabs}


@pytest.fixture(scope="module")
def day(stack, airflow_settings) -> dict[str, Any]:
    from airflow.models import Variable

    with pymongo.MongoClient(stack.mongo_uri) as client:
        client.drop_database("leadflow")
    clients.reset(stack.control_url("sheets"))
    sheets_quota_off(stack)
    for key in ("leadflow_session_report_spreadsheet_id", "leadflow_consolidated_report_spreadsheet_id"):
        Variable.delete(key)
    end = datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, 21, tzinfo=IST)
    seed_database(stack.mongo_uri, SeedSpec(interactions=500, seed=11, end=end, days=1))
    with pymongo.MongoClient(stack.mongo_uri) as client:
        # Leads who did not chat yesterday: after the day they have still not chatted this week.
        quiet = {"_id": {"$nin": client.leadflow.interactions.distinct("user_id")}}
        users = list(client.leadflow.users.find(quiet).sort("_id", 1))
        assert len(users) >= 2, "the seed left no quiet leads"
        client.leadflow.interactions.insert_many(_old_month_docs(users))
    dag = load_dag("interaction_reports")
    runs = [_run(dag, stack, OLD_RUN)] + [_run(dag, stack, hour) for hour in RUN_HOURS]
    return {"dag": dag, "runs": runs}


def _dashboard(book: dict[str, Any]) -> tuple[dict[str, Any], list[list[Any]]]:
    sheets = [s for s in book["meta"]["sheets"] if s["properties"]["title"].startswith("Dashboard")]
    assert len(sheets) == 1, [s["properties"]["title"] for s in book["meta"]["sheets"]]
    return sheets[0], book["tabs"][sheets[0]["properties"]["title"]]


def _records(rows: list[list[Any]]) -> list[dict[str, Any]]:
    header = rows[0]
    return [dict(zip(header, row + [""] * (len(header) - len(row)), strict=True)) for row in rows[1:]]


def _block(values: list[list[Any]], row: int, col: int, width: int) -> list[list[Any]]:
    """The pivot output anchored at (row, col): rows until the first blank first cell."""
    out = []
    for line in values[row:]:
        cells = (line + [""] * (col + width))[col : col + width]
        if cells[0] in ("", None):
            break
        out.append(cells)
    return out


def _moment(serial: float) -> datetime:
    return EPOCH + timedelta(seconds=round(serial * 86400))


def _date(serial: float) -> date:
    return _moment(serial).date()


def test_the_first_run_builds_the_dashboards_and_later_runs_make_no_extra_calls(day) -> None:
    first, second, *rest = day["runs"]
    assert first["sessions"]["dashboard"]["action"] == "build"
    assert first["consolidated"]["dashboard"]["action"] == "build"
    assert first["sessions"]["dashboard"]["calls"] == first["consolidated"]["dashboard"]["calls"] == 1
    if OLD_DAY.month != YESTERDAY.month:  # yesterday's first run adds a newer month tab: pivots move to it
        assert second["sessions"]["dashboard"] == {"action": "repoint", "requests": 4, "calls": 1}
        # The new lead tab's highlighting (2 rules), the note and the 5 pivots onto it.
        assert second["consolidated"]["dashboard"] == {"action": "repoint", "requests": 8, "calls": 1}
    else:
        assert second["sessions"]["dashboard"] == {"action": None, "calls": 0}
        assert second["consolidated"]["dashboard"] == {"action": None, "calls": 0}
    for number, run in enumerate([first, second, *rest]):
        written = [run[k] for k in ("sessions", "consolidated") if run[k]]
        own = sum(r["reads"] + r["writes"] + r["dashboard"]["calls"] for r in written)
        if number == 0:  # the first run also creates, names and protects the new spreadsheets
            assert run["sheets_calls"] >= own, run
        else:
            assert run["sheets_calls"] == own, run  # nobody else called Sheets
    assert all(run["sessions"] and run["consolidated"] for run in day["runs"]), "an hour without chats"
    for run in rest:
        assert run["sessions"]["dashboard"]["calls"] == run["consolidated"]["dashboard"]["calls"] == 0


def test_leads_dashboard_counts_match_the_leads_tab(day, stack) -> None:
    book = _book(stack, LEADS_TITLE)
    sheet, values = _dashboard(book)
    assert sheet["properties"]["index"] == 0
    # A lead is in the tab of the month of its first chat; the dashboard counts the latest one.
    lead_tabs = sorted(t for t in book["tabs"] if t.startswith("Leads "))
    assert lead_tabs == sorted({f"Leads {OLD_DAY:%Y-%m}", f"Leads {YESTERDAY:%Y-%m}"})
    latest = lead_tabs[-1]
    leads = _records(book["tabs"][latest])
    assert len(leads) > 20
    today = datetime.now(IST).date()
    funnel = [
        len(leads),
        sum(1 for r in leads if r["Last Interaction"] != "" and _date(r["Last Interaction"]) >= today - timedelta(7)),
        sum(1 for r in leads if r["Visit Status"] in ("scheduled", "completed")),
        sum(1 for r in leads if r["Visit Status"] == "completed"),
    ]
    assert values[4][:4] == ["Leads", "Chatted in the last 7 days", "Visit scheduled or done", "Visit completed"]
    assert values[5][:4] == funnel
    assert values[1][0] == dashboard.leads_note(latest)
    if OLD_DAY.month != YESTERDAY.month:  # the old-month leads are in their own tab
        assert 0 < funnel[1] == funnel[0]
    else:
        assert 0 < funnel[1] < funnel[0]  # the old-month lead did not chat this week
    assert 0 < funnel[3] < funnel[2]

    pivot = _block(values, 8, 0, 3)
    assert pivot[0][:2] == ["Leads", "Visit scheduled"]
    assert pivot[1] == ["Rank", "No", "Yes"]
    counts = Counter((r["Rank"], r["Visit Scheduled"]) for r in leads)
    ranks = sorted({r["Rank"] for r in leads}, key=lambda v: (isinstance(v, str), str(v).casefold()))
    expected = [[rank, counts[(rank, "No")] or "", counts[(rank, "Yes")] or ""] for rank in ranks if rank != ""]
    assert pivot[2:] == expected

    (chart,) = sheet["charts"]
    spec = chart["spec"]
    assert spec["title"] == "Leads by rank: visit scheduled or not"
    assert spec["basicChart"]["stackedType"] == "STACKED"
    assert {a["title"] for a in spec["basicChart"]["axis"]} == {"Lead rank", "Number of leads"}
    for tab in lead_tabs:  # every lead tab highlights, once
        leads_sheet = next(s for s in book["meta"]["sheets"] if s["properties"]["title"] == tab)
        conditions = [
            r["booleanRule"]["condition"]["values"][0]["userEnteredValue"] for r in leads_sheet["conditionalFormats"]
        ]
        assert conditions == ["High", "Yes"], tab


def test_session_dashboard_counts_match_the_latest_month_tab(day, stack) -> None:
    book = _book(stack, SESSION_TITLE)
    sheet, values = _dashboard(book)
    months = sorted(t for t in book["tabs"] if re.fullmatch(r"\d{4}-\d{2}", t))
    assert months == sorted({OLD_DAY.strftime("%Y-%m"), YESTERDAY.strftime("%Y-%m")})
    sessions = _records(book["tabs"][months[-1]])
    per_day = Counter(_date(r["Session Start"]).isoformat() for r in sessions)
    per_intent = Counter(r["Intent Detected"] for r in sessions if r["Intent Detected"] != "")
    per_hour = Counter(_moment(r["Session Start"]).hour for r in sessions)

    assert _block(values, 4, 0, 2) == [["Day", "Sessions"], *map(list, sorted(per_day.items()))]
    intents = _block(values, 4, 3, 2)
    assert intents[0] == ["Intent", "Sessions"]
    assert dict(map(tuple, intents[1:])) == per_intent
    assert [n for _i, n in intents[1:]] == sorted(per_intent.values(), reverse=True)
    assert _block(values, 4, 6, 2) == [["Hour (IST)", "Sessions"], *map(list, sorted(per_hour.items()))]

    titles = [c["spec"]["title"] for c in sheet["charts"]]
    assert titles == [
        "Chat sessions per day",
        "What buyers ask about: sessions by detected intent",
        "Busy hours: sessions by starting hour",
    ]


def _without_updated(rows: list[list[Any]]) -> list[list[Any]]:
    """A rerun re-reads its hour, so ``Updated`` moves on; every other cell must stay the same."""
    if not rows or "Updated" not in rows[0]:
        return rows
    at = rows[0].index("Updated")
    return [row[:at] + row[at + 1 :] for row in rows]


def _snapshot(stack) -> dict[str, Any]:
    out = {}
    for title in (SESSION_TITLE, LEADS_TITLE):
        book = _book(stack, title)
        out[title] = {
            "tabs": {tab: _without_updated(rows) for tab, rows in book["tabs"].items()},
            "sheets": [
                {k: s.get(k) for k in ("properties", "charts", "conditionalFormats")} for s in book["meta"]["sheets"]
            ],
        }
    return out


def test_a_rerun_or_a_rebuild_neither_duplicates_nor_breaks_the_dashboard(day, stack) -> None:
    before = _snapshot(stack)
    for hour in (RUN_HOURS[5], RUN_HOURS[0], RUN_HOURS[-1]):
        run = _run(day["dag"], stack, hour)
        assert run["sessions"]["dashboard"]["action"] is None
        assert run["consolidated"]["dashboard"]["action"] is None
    assert _snapshot(stack) == before

    quiet_hour = OLD_RUN + timedelta(hours=6)  # no chats: the rebuild still reaches the writes
    rebuilt = _run(day["dag"], stack, quiet_hour, rebuild_dashboard=True)
    assert rebuilt["sessions"]["rows_added"] == rebuilt["sessions"]["rows_updated"] == 0
    assert rebuilt["sessions"]["dashboard"]["action"] == "rebuild"
    # The Leads rules of the first build are read and replaced, not added a second time.
    assert rebuilt["consolidated"]["dashboard"]["action"] == "rebuild"
    assert rebuilt["consolidated"]["dashboard"]["calls"] == 2
    assert _snapshot(stack) == before


def _chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (the test setup runs as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"],
        check=True,
        env=env,
        timeout=1200,
    )
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def test_the_html_view_draws_the_dashboard_in_a_real_browser(day, stack, tmp_path: Path) -> None:
    from devstack.sheets_view import write_view

    page = write_view(Path(stack.state_dir) / "sheets", tmp_path / "index.html")
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1700"]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    screenshot = tmp_path / "sheets-view.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120, check=True
    )
    assert screenshot.stat().st_size > 10_000

    found = re.search(r'<pre id="view-check"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "no view-check element in the page"
    assert found.group(1), "the page's script did not run"
    seen = json.loads(html.unescape(found.group(1)))
    charts = {c["title"]: c for c in seen["charts"]}
    assert set(charts) == {
        "Leads by rank: visit scheduled or not",
        "Chat sessions per day",
        "What buyers ask about: sessions by detected intent",
        "Busy hours: sessions by starting hour",
    }
    for chart in charts.values():
        assert chart["series"] >= 1, chart
        assert chart["points"] >= 1, chart
        assert chart["drawn"] >= 1, chart  # bars or slices the browser laid out with a size
    assert charts["Leads by rank: visit scheduled or not"]["series"] == 2
    # A datetime cell reads as a date, not as a serial number like 46357.62.
    assert seen["dates"], "no date cell rendered"
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", text) for text in seen["dates"]), seen["dates"][:5]
