"""The reports converge to MongoDB (issue 21): hypothesis interleaves report runs (on time, late,
skipped hours, backfills, re-runs of landed hours, failed runs) with profile changes of leads who
do not chat, messages written hours late into old sessions, Sheets faults between calls and
rollovers (the cell budget Variable lowered between runs, as an operator or a growing sheet
would), then checks that after the last successful run the sheets equal an independent
computation of both reports from every document in MongoDB: every key once, in one tab of one of
all the spreadsheets the report has had, every row as MongoDB says now.

A run here is the DAG's task bodies in order (``extract_step`` → ``transform_step`` →
``load_step`` per report → ``record_step`` only if both loads succeeded → ``finish_step``), called
in-process because ``dag.test()`` costs ~5 s a run; the branch and trigger rules they stand for
are checked through ``dag.test()`` in tests/reports/test_convergence.py. MongoDB and Sheets are the
stand-ins; a Sheets fault is a 403 (not retried) on the next call whose path matches.

A message may also be written, late, on 31 October into a session that began on 20 November: the
session's start moves into the previous month, and its row must then be in the 2026-10 tab only
(one key, one row, one place: issue 21 point 3). September's sessions (21 September, with runs
of September hours) and December's (1 December) give a rollover months to leave behind and to
start with: after a rollover that left September in the earlier spreadsheet, a late message
there and a backfill must write there (issue 21 point 4), not into a second September tab.

Variables are the metadata database's, through the supervisor channel a task has
(tests/reports/supervisor_variables.py): the rollover writes the new spreadsheet's id into its
Variable and the next run must read it back, which environment variables cannot do.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pymongo
import pytest
from bson import ObjectId
from googleapiclient.errors import HttpError
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from devstack import clients
from leadflow.config import VAR_REPORT_LOOKBACK_MINUTES
from leadflow.reports.rollover import EARLIER_TAB, ROLLOVER_VARIABLES, VAR_CELL_BUDGET, CellBudgetExceeded
from tests.helpers import read_spreadsheet
from tests.reports.fixture import IST, ist, serial
from tests.reports.supervisor_variables import task_variables
from tests.reports.test_dag import LEADS_TITLE, SESSION_TITLE
from tests.reports.test_window import interval_of_run_at

REPORT = "interaction_reports"
USER_IDS: list[Any] = [ObjectId("670000000000000000000001"), ObjectId("670000000000000000000002"), 7]
# session -> owner (index into USER_IDS); F and G are September's sessions, H December's.
SESSIONS = {"A": 0, "B": 0, "C": 1, "D": 2, "E": 2, "F": 0, "G": 1, "H": 2}
RUN_HOURS = [ist(20, hour, 0) for hour in range(9, 22)]
SEPTEMBER = timedelta(days=-60)  # 21 September: a month a rollover in November leaves behind
SEPTEMBER_HOURS = [ist(20, hour, 0) + SEPTEMBER for hour in range(9, 22, 3)]
# 31 October and 1 December: the months on either side of November's (TWO_ROLLOVERS runs them).
OCTOBER_HOURS = [hour + timedelta(days=40) for hour in SEPTEMBER_HOURS]
DECEMBER_HOURS = [ist(20, hour, 0) + timedelta(days=11) for hour in range(9, 22, 3)]
# The _id time of a message written on time: long before any run here, so no run's change scan
# (since the last successful run) reads it; only the run whose window holds its timestamp does.
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)
INTENTS = [None, "Pricing", "Site Visit"]
PROFILE_CHANGES: list[dict[str, Any]] = [
    {"site_visit.status": "completed"},
    {"site_visit.status": "cancelled"},
    {"site_visit.status": "scheduled"},
    {"ranking": "High"},
    {"ranking": "Low"},
    {"name": "Name Fixed"},
    {"preferred_configuration": "4BHK"},
]
FAULT_CALLS = ["/values:batchGet", "/values:batchUpdate", ":batchUpdate", ":copyTo"]
# Any spreadsheet, or only a report's current one (as the run starts) or its first one: a fault
# can then fall between the writes of one load into two spreadsheets (a backfill after a rollover).
FAULT_PLACES: list[tuple[str, str] | None] = [
    None, None, ("sessions", "current"), ("consolidated", "current"), ("sessions", "first"), ("consolidated", "first"),
]  # fmt: skip
KINDS = ("sessions", "consolidated")
TITLES = {"sessions": SESSION_TITLE, "consolidated": LEADS_TITLE}


def initial_user(index: int) -> dict[str, Any]:
    return {
        "_id": USER_IDS[index], "name": f"Buyer {index}", "mobile": f"+9198765432{index:02d}",
        "preferred_configuration": "2BHK", "ranking": "Medium",
        "site_visit": {"status": "scheduled", "scheduled_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC)},
    }  # fmt: skip


# The day a message's timestamp names, in days from 20 November. A..E: mostly the report day,
# sometimes 31 October (a late, earlier message that moves its session's start into the month
# before). F, G: 21 September, H: 1 December, months a rollover can leave behind or start a
# spreadsheet with; a lead whose first chat was in November may chat in F or G, so its first
# month moves two months back. Sessions move at most one month back, as documented: the upsert of
# session tabs reads the tab before and after the one it writes (two months back, the old row
# would be missed; see the report).
DAYS: dict[str, list[int]] = {"F": [-60], "G": [-60], "H": [11]}
chat = st.sampled_from(sorted(SESSIONS)).flatmap(
    lambda session: st.tuples(
        st.just("chat"), st.just(session), st.integers(0, 20), st.integers(0, 59),
        st.sampled_from(INTENTS), st.sampled_from(DAYS.get(session, [0, 0, 0, -20])),
    )
)  # fmt: skip
profile = st.tuples(st.just("profile"), st.integers(0, len(USER_IDS) - 1), st.integers(0, len(PROFILE_CHANGES) - 1))
# A run of any hour in any order: on time, late, a backfill, a re-run of a landed hour; hours
# never run are the skipped ones. A fault is a 403 on the run's first Sheets call of that kind
# (to that spreadsheet, if a place is given).
fault = st.tuples(st.sampled_from(FAULT_PLACES), st.sampled_from(FAULT_CALLS))
run = st.tuples(st.just("run"), st.sampled_from(RUN_HOURS + SEPTEMBER_HOURS), st.one_of(st.none(), st.none(), fault))
# The cell budget set to what a report's current spreadsheet holds (its next write that adds a
# row rolls it over, or fails with CellBudgetExceeded if even a new one cannot take it), a tab's
# worth above it, or back to the default (None: the Variable deleted).
budget = st.tuples(st.just("budget"), st.sampled_from(KINDS), st.sampled_from([0, 0, 12_000, None]))
operations = st.lists(st.one_of(chat, chat, profile, run, run, budget), min_size=3, max_size=12)


# September, October and November in both reports, each written on time by its day's run (see
# TWO_ROLLOVERS for why on time); the budget lowered to what the session-wise spreadsheet holds,
# so November's next write rolls both reports over (October moves with it, September stays in
# the session-wise one); then a late message into September's session and a backfill of a
# September hour, which must write into the earlier spreadsheet.
SEPTEMBER_LEFT_BEHIND: list[tuple] = [
    ("on time", "F", 11, 0, "Pricing", -60), ("run", SEPTEMBER_HOURS[1], None),
    ("on time", "E", 11, 0, None, -20), ("run", OCTOBER_HOURS[1], None),
    ("on time", "C", 11, 0, None, 0), ("run", RUN_HOURS[3], None),
    ("budget", "sessions", 0), ("on time", "D", 12, 0, None, 0), ("run", RUN_HOURS[4], None),
    ("chat", "F", 12, 0, "Site Visit", -60), ("run", SEPTEMBER_HOURS[1], None),
]  # fmt: skip
# The session-wise report's two rollovers, each month's tab in a known spreadsheet: September,
# October and November in the first; November's write rolls it over (October and November move,
# September stays); December joins them; December's next write rolls over again (November and
# December move, October stays in the second). Then late messages of October and September, for
# the spreadsheets that hold those months. Every message before the late ones is written on time
# (reached by its hour's window only): a message written now is also read again by each run that
# starts within the second of the last successful run's read (the change scan's ObjectId time has
# whole seconds), so which months a run writes, and which tabs a rollover moves, would depend on
# how fast the runs came. The October session is B's (user 0, whose lead tab is September's, like
# session F's): E's owner would put a third month among the lead tabs, which the lowered budget
# cannot move into a new consolidated spreadsheet (a CellBudgetExceeded that is right, not this
# scenario's).
TWO_ROLLOVERS: list[tuple] = [
    ("on time", "F", 11, 0, None, -60), ("run", SEPTEMBER_HOURS[1], None),
    ("on time", "B", 11, 0, None, -20), ("run", OCTOBER_HOURS[1], None),
    ("on time", "C", 11, 0, None, 0), ("run", RUN_HOURS[3], None),
    ("budget", "sessions", 0), ("on time", "D", 12, 0, None, 0), ("run", RUN_HOURS[4], None),
    ("on time", "H", 11, 0, None, 11), ("run", DECEMBER_HOURS[1], None),
    ("budget", "sessions", 0), ("on time", "H", 14, 0, "Pricing", 11), ("run", DECEMBER_HOURS[2], None),
    ("chat", "B", 14, 0, None, -20), ("chat", "F", 14, 0, None, -60),
]  # fmt: skip
# Where TWO_ROLLOVERS leaves each month of the session-wise report: spreadsheet (0 = the first) -> months.
TWO_ROLLOVERS_MONTHS = [{"2026-09"}, {"2026-10"}, {"2026-11", "2026-12"}]


# -- the independent reference: plain Python over the documents, not our transform -------------


def text_id(value: Any) -> str:
    return str(value)


def reference(users: list[dict], interactions: list[dict]) -> tuple[dict[str, list], dict[str, list]]:
    people = {text_id(u["_id"]): u for u in users}
    by_session: dict[str, list[dict]] = defaultdict(list)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for doc in interactions:
        by_session[doc["session_id"]].append(doc)
        by_user[text_id(doc["user_id"])].append(doc)
    sessions = {}
    for session_id, docs in by_session.items():
        docs.sort(key=lambda d: d["timestamp"])
        start, end = docs[0]["timestamp"], docs[-1]["timestamp"]
        owner = text_id(docs[0]["user_id"])
        counts = Counter(d["intent"] for d in docs if d["intent"])
        last_seen = {d["intent"]: d["timestamp"] for d in docs if d["intent"]}
        intent = max(counts, key=lambda i: (counts[i], last_seen[i])) if counts else ""
        person = people[owner]
        sessions[session_id] = [
            session_id, person["name"], person["mobile"], serial(start), serial(end),
            int((end - start).total_seconds() // 60), len(docs), intent, owner,
        ]  # fmt: skip
    leads = {}
    for user_id, docs in by_user.items():
        person = people[user_id]
        visit = person.get("site_visit") or {}
        leads[user_id] = [
            user_id, person["name"], person["mobile"], person["preferred_configuration"], person["ranking"], "Yes",
            "Yes" if visit.get("status") == "scheduled" and visit.get("scheduled_at") else "No",
            len({d["session_id"] for d in docs}), len(docs),
            serial(min(d["timestamp"] for d in docs)), serial(max(d["timestamp"] for d in docs)),
            visit.get("status") or "",
        ]  # fmt: skip
    return sessions, leads


# -- the run driver ------------------------------------------------------------------------------


class Driver:
    def __init__(self, stack: Any, db: Any, first: dict[str, str]) -> None:
        self.stack, self.db = stack, db
        self.first = first  # report -> the spreadsheet it started with
        self.written = 0
        self.failures: list[str] = []  # why each load of the last run failed
        self.notes: set[str] = set()  # what happened, for --hypothesis-show-statistics

    def write_message(
        self, session_id: str, hour: int, minute: int, intent: str | None, day: int = 0, on_time: bool = False
    ) -> None:
        # Written now (its _id time), whatever hour its timestamp names: late data, however late;
        # or on time (an _id time long ago, unique by the count). Milliseconds keep every
        # timestamp distinct, so a tie between intents is never a coin toss.
        self.written += 1
        when = ist(20, hour, minute) + timedelta(days=day, milliseconds=self.written)
        owner = USER_IDS[SESSIONS[session_id]]
        written = ObjectId(ObjectId.from_datetime(LONG_AGO).binary[:4] + self.written.to_bytes(8, "big"))
        self.db.interactions.insert_one(
            {"user_id": owner, "session_id": session_id, "role": "user", "text": "…",
             "timestamp": when.astimezone(UTC), "intent": intent, **({"_id": written} if on_time else {})}
        )  # fmt: skip

    def change_profile(self, user: int, change: int) -> None:
        self.db.users.update_one(
            {"_id": USER_IDS[user]}, {"$set": {**PROFILE_CHANGES[change], "updated_at": datetime.now(UTC)}}
        )

    def run(self, hour: datetime) -> bool:
        """One report run of the scheduled hour ``hour``, as the DAG's tasks would make it."""
        from leadflow.reports.pipeline import extract_step, load_step, transform_step
        from leadflow.reports.summary import finish_step
        from leadflow.reports.watermark import record_step
        from leadflow.reports.window import report_window

        start, end = interval_of_run_at(hour)
        extracted = extract_step(REPORT, f"invariant__{uuid.uuid4().hex}", report_window(start, end, end, 15))
        self.failures = []
        if extracted["touched_sessions"]:  # the anything_touched branch
            for kind in KINDS:  # parallel tasks: one failing leaves the other
                try:
                    loaded = load_step(kind, transform_step(kind, extracted))
                    if loaded["earlier_spreadsheets"]:
                        self.notes.add(f"{kind}: a write into an earlier spreadsheet")
                except (HttpError, CellBudgetExceeded) as error:
                    self.failures.append(type(error).__name__)
        landed = not self.failures
        if landed:
            record_step(extracted)
            finish_step(extracted, {})
        return landed

    def set_budget(self, kind: str, above: int | None) -> None:
        """The cell budget ``above`` cells over what ``kind``'s current spreadsheet holds (None:
        back to the default), set as an operator would, in the metadata database."""
        from airflow.sdk import Variable

        from leadflow.reports.pipeline import SPREADSHEET_VARIABLES

        if above is None:
            Variable.delete(VAR_CELL_BUDGET)
            return
        book = clients.spreadsheet_state(self.stack.control_url("sheets"), Variable.get(SPREADSHEET_VARIABLES[kind]))
        grids = [sheet["properties"]["gridProperties"] for sheet in book["sheets"]]
        Variable.set(VAR_CELL_BUDGET, str(sum(g["rowCount"] * g["columnCount"] for g in grids) + above))

    def fault_path(self, place: tuple[str, str] | None, call: str) -> str:
        """What the fault's path must contain: the call, after the spreadsheet's id if placed."""
        from airflow.sdk import Variable

        from leadflow.reports.pipeline import SPREADSHEET_VARIABLES

        if place is None or call == ":copyTo":  # a copy's path names the tab's id too: any copy
            return call
        kind, which = place
        return (Variable.get(SPREADSHEET_VARIABLES[kind]) if which == "current" else self.first[kind]) + call


def play(driver: Driver, operations: list[tuple]) -> None:
    for operation in operations:
        match operation:
            case ("chat", session_id, hour, minute, intent, day):
                driver.write_message(session_id, hour, minute, intent, day)
            case ("on time", session_id, hour, minute, intent, day):
                driver.write_message(session_id, hour, minute, intent, day, on_time=True)
            case ("profile", user, change):
                driver.change_profile(user, change)
            case ("budget", kind, above):
                driver.set_budget(kind, above)
            case ("run", hour, None):
                driver.run(hour)
            case ("run", hour, (place, call)):
                path = driver.fault_path(place, call)
                clients.inject_faults(
                    driver.stack.control_url("sheets"), [{"count": 1, "status": 403, "path_contains": path}]
                )
                driver.run(hour)
                drain_faults(driver.stack)  # a run that touched nothing made no Sheets call


def drain_faults(stack: Any) -> None:
    """Spend a fault the run did not meet on a call of ours that the fault refuses, so it changes nothing."""
    import requests

    from tests.helpers import sheets_service

    pending = requests.get(stack.control_url("sheets").rstrip("/") + "/_control/faults", timeout=10).json()
    anyone = clients.spreadsheet_list(stack.control_url("sheets"))[0]["spreadsheetId"]
    values = sheets_service(stack).spreadsheets().values()
    calls: dict[str, Callable[[str], Any]] = {
        "/values:batchGet": lambda spreadsheet: values.batchGet(spreadsheetId=spreadsheet, ranges=["A1"]),
        "/values:batchUpdate": lambda spreadsheet: values.batchUpdate(
            spreadsheetId=spreadsheet, body={"valueInputOption": "RAW", "data": []}
        ),
        ":batchUpdate": lambda spreadsheet: (
            sheets_service(stack).spreadsheets().batchUpdate(spreadsheetId=spreadsheet, body={"requests": []})
        ),
        ":copyTo": lambda spreadsheet: (
            sheets_service(stack)
            .spreadsheets()
            .sheets()
            .copyTo(spreadsheetId=spreadsheet, sheetId=0, body={"destinationSpreadsheetId": spreadsheet})
        ),
    }
    for pending_fault in pending["faults"]:
        path = pending_fault["path_contains"]
        call = next(c for c in FAULT_CALLS if path.endswith(c))  # "/values:batchUpdate" before ":batchUpdate"
        with pytest.raises(HttpError):
            calls[call](path.removesuffix(call) or anyone).execute()


def report_books(stack: Any, kind: str) -> dict[str, dict[str, Any]]:
    """Every spreadsheet the report has had (the current one and the earlier ones): id -> tabs."""
    ids = [b["spreadsheetId"] for b in clients.spreadsheet_list(stack.control_url("sheets"))
           if b["title"].startswith(TITLES[kind])]  # fmt: skip
    return {sid: read_spreadsheet(stack, sid)["tabs"] for sid in ids}


def sheet_rows(books: dict[str, dict[str, Any]]) -> list[tuple[str, str, list]]:
    """(spreadsheet, tab, row) of every data row of every report tab, in every spreadsheet."""
    return [
        (sid, title, row) for sid, tabs in books.items() for title, tab in tabs.items()
        if title not in ("Dashboard", "Sheet1", EARLIER_TAB)
        for row in tab["rows"][1:] if any(cell not in ("", None) for cell in row)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def environment(stack, airflow_settings):
    """Connections and spreadsheet ids by environment variable: outside a task there is no
    supervisor to ask for them (as tests/reports/test_races.py does)."""
    host, port = stack.mongo_uri.removeprefix("mongodb://").split(":")
    return {
        "AIRFLOW_CONN_MONGO_DEFAULT": json.dumps(
            {"conn_type": "mongo", "host": host, "port": int(port), "schema": "leadflow", "extra": {"ssl": False}}
        ),
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"api_endpoint": stack.sheets_url}}
        ),
    }


def report_variables() -> list[str]:
    from leadflow.reports.pipeline import SPREADSHEET_VARIABLES

    return [VAR_CELL_BUDGET, VAR_REPORT_LOOKBACK_MINUTES, *ROLLOVER_VARIABLES.values(), *SPREADSHEET_VARIABLES.values()]


@pytest.fixture
def variables(airflow_settings):
    """The report Variables in the metadata database, read and written as a task would; gone after."""
    from airflow.models import Variable

    with task_variables():
        yield
    for key in report_variables():
        Variable.delete(key)


def fresh_state(stack: Any, env: dict[str, str]) -> dict[str, str]:
    """Empty MongoDB and Sheets, two new spreadsheets; their ids as the Variables (and returned), no budget set."""
    from airflow.sdk import Variable

    from leadflow.reports.pipeline import SPECS, SPREADSHEET_VARIABLES
    from leadflow.reports.sheets_api import SheetsClient

    with pymongo.MongoClient(stack.mongo_uri) as client:
        client.drop_database("leadflow")
    clients.reset(stack.control_url("sheets"))
    # May create in My Drive; no per-minute quota: the runs stand for hours but come seconds apart
    # (Google's quota and the client's backoff are tested in tests/reports/test_sheets_quota.py).
    clients.set_settings(stack.control_url("sheets"), caller="user", quota=None)
    for key in report_variables():
        Variable.delete(key)
    # No overlap on the change scan: it covers writes that become visible after their _id time,
    # which a test writing before each run has none of; with it, every run here would re-read
    # every write of the last 15 minutes (all of them), and a backfill would never write its
    # month alone, nor a watermark moved too far be seen.
    Variable.set(VAR_REPORT_LOOKBACK_MINUTES, "0")
    with mock.patch.dict(os.environ, env):
        sheets = SheetsClient()
        first = {kind: sheets.create_spreadsheet(SPECS[kind].title, None) for kind in KINDS}
    for kind, spreadsheet_id in first.items():
        Variable.set(SPREADSHEET_VARIABLES[kind], spreadsheet_id)
    return first


# LEADFLOW_INVARIANT_EXAMPLES=200 explores further, with fresh random examples each time.
EXPLORE = int(os.environ.get("LEADFLOW_INVARIANT_EXAMPLES", "0"))


@settings(max_examples=EXPLORE or 8, deadline=None, derandomize=not EXPLORE, suppress_health_check=list(HealthCheck))
@given(operations=operations, final_hour=st.sampled_from(RUN_HOURS + SEPTEMBER_HOURS))
# Always tried: session A lands in 2026-11, then a late message of 31 October moves its start.
@example(
    operations=[("chat", "A", 10, 5, "Pricing", 0), ("run", RUN_HOURS[3], None), ("chat", "A", 9, 0, None, -20)],
    final_hour=RUN_HOURS[5],
)
# Always tried: a rollover that leaves September behind, then a late message into it.
@example(operations=SEPTEMBER_LEFT_BEHIND, final_hour=RUN_HOURS[6])
# Always tried: leads of September, October and November; the consolidated report rolls over on
# November's write (September stays behind); a lead of November then chats on 21 September, so it
# moves into September in the earlier spreadsheet (session G), and the run fails on the current spreadsheet's
# write, after the earlier one's landed.
@example(
    operations=[
        ("chat", "F", 10, 5, None, -60), ("chat", "E", 10, 5, None, -20), ("chat", "C", 10, 5, None, 0),
        ("run", RUN_HOURS[3], None), ("budget", "consolidated", 0), ("chat", "C", 11, 0, None, 0),
        ("run", RUN_HOURS[4], None), ("chat", "G", 9, 0, None, -60),
        ("run", RUN_HOURS[5], (("consolidated", "current"), ":batchUpdate")),
    ],
    final_hour=RUN_HOURS[6],
)  # fmt: skip
# Always tried: a second rollover. The session-wise report rolls over on November's write (September
# stays behind), gets December, rolls over again on December's (October stays in the second
# spreadsheet); then late messages of October and September go to the spreadsheet of each.
@example(operations=TWO_ROLLOVERS, final_hour=SEPTEMBER_HOURS[2])
def test_after_the_last_successful_run_the_sheets_equal_mongodb(
    stack, environment, variables, operations: list[tuple], final_hour: datetime
) -> None:
    first = fresh_state(stack, environment)
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, mock.patch.dict(os.environ, environment):
        db = client.leadflow
        db.users.insert_many([initial_user(i) for i in range(len(USER_IDS))])
        driver = Driver(stack, db, first)
        # The first run ever has no watermark (it covers its window); from the second on, every
        # write since the last successful run is covered.
        assert driver.run(ist(20, 9, 0))
        play(driver, operations)
        if not driver.run(final_hour):
            # Only a budget too low for even a new spreadsheet may stop it: the alert asks the
            # operator to raise the budget, who does.
            assert set(driver.failures) == {"CellBudgetExceeded"}, (operations, driver.failures)
            driver.set_budget("sessions", None)
            assert driver.run(final_hour)

        want_sessions, want_leads = reference(list(db.users.find()), list(db.interactions.find()))
        want_tabs = {
            session_id: min(d["timestamp"] for d in db.interactions.find({"session_id": session_id}))
            .astimezone(IST)
            .strftime("%Y-%m")
            for session_id in want_sessions
        }
        # A lead is in the tab of the IST month of its first interaction.
        first_chat = {
            text_id(user["_id"]): min(d["timestamp"] for d in db.interactions.find({"user_id": user["_id"]}))
            for user in db.users.find()
            if text_id(user["_id"]) in want_leads
        }
        want_lead_tabs = {user: f"Leads {first.astimezone(IST):%Y-%m}" for user, first in first_chat.items()}
    for kind, want_rows, want_tab in (
        ("sessions", want_sessions, want_tabs),
        ("consolidated", want_leads, want_lead_tabs),
    ):
        books = report_books(stack, kind)
        event(f"{kind}: {len(books)} spreadsheet(s)")  # --hypothesis-show-statistics: how often it rolled over
        got = sheet_rows(books)
        # Every key once, in one tab of one of every spreadsheet the report has had, the tab of
        # its session's (its lead's first) month ...
        assert Counter(row[0] for _, _, row in got) == Counter(list(want_rows)), (kind, operations)
        assert {row[0]: tab for _, tab, row in got} == want_tab, (kind, operations)
        # ... with the row MongoDB gives now ...
        for _, _, row in got:
            assert row == pytest.approx(want_rows[row[0]]), (kind, operations, row)
        # ... each month in one spreadsheet (a backfill wrote where the month is, made no second
        # copy of it), and every spreadsheet found from the current one's "Earlier spreadsheets".
        homes = Counter(
            title for tabs in books.values() for title in tabs if title not in ("Dashboard", "Sheet1", EARLIER_TAB)
        )
        assert {title: n for title, n in homes.items() if n > 1} == {}, (kind, operations)
        assert_all_listed(books, kind)
    for note in sorted(driver.notes):
        event(note)
    from airflow.sdk import Variable

    # No rollover left half-way.
    assert all(Variable.get(name, default=None) is None for name in ROLLOVER_VARIABLES.values()), operations


def test_a_backfill_into_an_earlier_spreadsheet_counts_against_its_budget_not_the_current_ones(
    stack, environment, variables
) -> None:
    """After two rollovers, late messages of October and September go to the spreadsheets that hold
    those months; with the budget still low, the current spreadsheet has room for the rest of the
    write (nothing), so the run lands without a third rollover or a CellBudgetExceeded. (Counted
    as new tabs of the current spreadsheet, they made it fail: the generated test's last run only
    saw it pass once the operator raised the budget.)"""
    first = fresh_state(stack, environment)
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client, mock.patch.dict(os.environ, environment):
        client.leadflow.users.insert_many([initial_user(i) for i in range(len(USER_IDS))])
        driver = Driver(stack, client.leadflow, first)
        assert driver.run(ist(20, 9, 0))
        play(driver, TWO_ROLLOVERS[:-2])
        assert driver.failures == []
        assert months_by_spreadsheet(stack, "sessions") == TWO_ROLLOVERS_MONTHS  # the setup, exactly
        play(driver, TWO_ROLLOVERS[-2:])
        assert driver.run(SEPTEMBER_HOURS[2]), driver.failures
        # Written where each month is: no third spreadsheet, no second copy of a month.
        assert months_by_spreadsheet(stack, "sessions") == TWO_ROLLOVERS_MONTHS


def months_by_spreadsheet(stack: Any, kind: str) -> list[set[str]]:
    """The month tabs of each of the report's spreadsheets, the first first (the order of the
    current one's "Earlier spreadsheets" list, then the current one)."""
    from airflow.sdk import Variable

    from leadflow.reports.pipeline import SPREADSHEET_VARIABLES

    books = report_books(stack, kind)
    current = Variable.get(SPREADSHEET_VARIABLES[kind])
    earlier = [str(row[1]) for row in books[current].get(EARLIER_TAB, {"rows": [[]]})["rows"][1:]]
    assert sorted([*earlier, current]) == sorted(books), kind  # every spreadsheet listed, once
    return [
        {title for title in books[sid] if title not in ("Dashboard", "Sheet1", EARLIER_TAB)}
        for sid in [*earlier, current]
    ]


def assert_all_listed(books: dict[str, dict[str, Any]], kind: str) -> None:
    from airflow.sdk import Variable

    from leadflow.reports.pipeline import SPREADSHEET_VARIABLES

    current = Variable.get(SPREADSHEET_VARIABLES[kind])
    earlier = books[current].get(EARLIER_TAB, {"rows": [[]]})["rows"][1:]
    assert {current, *(str(row[1]) for row in earlier)} == set(books), kind


@pytest.mark.parametrize("session_id", ["S1", "S2", "S3", "S6"])
def test_the_reference_agrees_with_the_hand_written_fixture(session_id: str) -> None:
    """The reference itself, against the rows written by hand in tests/reports/fixture.py (S1: an
    hour-crossing session, S2: an intent tie going to the latest)."""
    from tests.reports import fixture

    docs = [d for d in fixture.INTERACTIONS if d.get("session_id") == session_id]
    sessions, _ = reference(fixture.USERS, docs)
    row = sessions[session_id]
    want = next(r for r in fixture.EXPECTED_SESSIONS if r[0] == session_id)
    assert [row[0], row[1], *row[3:]] == pytest.approx([want[0], want[1], serial(want[3]), serial(want[4]), *want[5:]])
