"""Report freshness: one "late" alert per scheduled hour whose data has not landed, one
"recovered" note when it lands.

Checked by the ``interaction_reports_freshness`` watchdog DAG (every 5 minutes, 09:00–22:55 IST),
not by a DeadlineAlert on the report DAG: Airflow 3.3.1's ``dag.test()`` / ``airflow dags test``
fail on a DAG that has one, a backfill's runs all get a deadline counted from when they were
queued, and a deadline callback may be picked up by more than one triggerer.

At its check time T (the watchdog run's data interval end), the watchdog looks at every hour H the
report is scheduled for with ``T - 24 h < H <= T - freshness`` (Variable
``leadflow_report_freshness_minutes``, default 20). It asks about the **data**, not a run's state
(see :mod:`leadflow.reports.watermark`): H has landed when a successful run (scheduled, backfill or
manual with that logical date) covered H's interval, or when the change watermark has passed H and
the change scans had begun before H's interval started (a later run read everything written in it). So
clearing or reprocessing an hour that landed raises nothing, and an hour with no run at all (a
scheduler outage, a paused DAG) that the next run covers counts as landed then. An hour that has not
landed is late if it has a scheduled run (``scheduled__<H in UTC>``) or if it comes after the first
recorded landing (before that, the report was not running yet). Each alert first claims a
document with a fixed ``_id`` in the ``report_freshness`` collection (``insert_one``, so of two
watchdogs racing, two schedulers' duplicates or a re-run, exactly one wins) and only the winner
publishes; if publishing fails the claim is released so the next check tries again. A late hour
that later lands gets one "recovered" note the same way (a ``late`` → ``recovering`` state change
only one caller can make).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from leadflow.alerts import publish_alert
from leadflow.reports.watermark import REPORT_DAG_ID, Landed, hours_landed, landed
from leadflow.reports.window import IST
from leadflow.timefmt import ist

if TYPE_CHECKING:
    # Both DAG files import this module's crons: pymongo at parse time would cost every parse loop.
    from pymongo.database import Database

log = logging.getLogger(__name__)

FIRST_HOUR, LAST_HOUR = 9, 21  # IST clock hours the report's scheduled runs start at
REPORT_CRON = f"0 {FIRST_HOUR}-{LAST_HOUR} * * *"
WATCHDOG_CRON = f"*/5 {FIRST_HOUR}-{LAST_HOUR + 1} * * *"
VAR_FRESHNESS_MINUTES = "leadflow_report_freshness_minutes"
DEFAULT_FRESHNESS_MINUTES = 20
COLLECTION = "report_freshness"
LOOKBACK = timedelta(hours=24)
RECOVERY_HORIZON = timedelta(days=7)  # a late hour still open after this gets no "recovered" note


class RunStates(Protocol):
    def state(self, run_id: str) -> str | None:
        """The report run's state, or None when there is no such run."""


class TaskSdkRunStates:
    """Run states through the Task SDK (the task's execution API, no metadata-DB access)."""

    def __init__(self, ti: Any, dag_id: str = REPORT_DAG_ID) -> None:
        self.ti, self.dag_id = ti, dag_id

    def state(self, run_id: str) -> str | None:
        if not self.ti.get_dr_count(dag_id=self.dag_id, run_ids=[run_id]):
            return None
        state = self.ti.get_dagrun_state(dag_id=self.dag_id, run_id=run_id)
        # DagRunState is a (str, Enum): str() gives "DagRunState.SUCCESS", never "success".
        return str(getattr(state, "value", state))


@dataclass
class FreshnessResult:
    checked_at: str
    hours_checked: int = 0
    late: list[str] = field(default_factory=list)  # run ids alerted now
    already_alerted: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def scheduled_hours(now: datetime, freshness: timedelta) -> list[datetime]:
    """The report's scheduled run times (UTC) in ``(now - 24 h, now - freshness]``."""
    latest = (now - freshness).astimezone(IST)
    hour = latest.replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour.astimezone(UTC) > now - LOOKBACK:
        if FIRST_HOUR <= hour.hour <= LAST_HOUR:
            hours.append(hour.astimezone(UTC))
        hour = (hour.astimezone(UTC) - timedelta(hours=1)).astimezone(IST)
    return sorted(hours)


def scheduled_run_id(hour: datetime) -> str:
    # DagRun.generate_run_id for a scheduled run: "scheduled__" + run_after (the interval end).
    return f"scheduled__{hour.astimezone(UTC).isoformat()}"


def freshness_minutes() -> int:
    from airflow.sdk import Variable

    raw = Variable.get(VAR_FRESHNESS_MINUTES, default=str(DEFAULT_FRESHNESS_MINUTES))
    try:
        minutes = int(raw)
    except ValueError as error:
        raise ValueError(f"Variable {VAR_FRESHNESS_MINUTES} must be whole minutes, got {raw!r}") from error
    if minutes < 0:
        raise ValueError(f"Variable {VAR_FRESHNESS_MINUTES} must not be negative, got {minutes}")
    return minutes


def _run_url(run_id: str) -> str:
    from airflow.sdk import conf

    base_url = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base_url}/dags/{REPORT_DAG_ID}/runs/{quote(run_id)}"


def _claimed(claim: Callable[[], bool], publish: Callable[[], None], release: Callable[[], None]) -> bool:
    """Publish only if the claim is ours; give the claim back if publishing fails."""
    if not claim():
        return False
    try:
        publish()
    except BaseException:
        release()
        raise
    return True


def check_freshness(db: Database, runs: RunStates, now: datetime, freshness: timedelta) -> FreshnessResult:
    from pymongo.errors import DuplicateKeyError

    store = db[COLLECTION]
    result = FreshnessResult(checked_at=ist(now))
    hours = scheduled_hours(now, freshness)
    mark = landed(db)
    has_landed = _landed_test(mark, hours_landed(db, hours))
    for hour in hours:
        result.hours_checked += 1
        run_id = scheduled_run_id(hour)
        if has_landed(hour):
            continue
        state = runs.state(run_id)
        if state is None and (mark is None or hour <= mark.first_read_at):
            continue  # no run, and the report was not running yet then
        state = state or "no run"
        key = f"{REPORT_DAG_ID}|{run_id}"
        label = hour.astimezone(IST).strftime("%Y-%m-%d %H:%M IST")
        lines = {
            "dag": REPORT_DAG_ID, "run": run_id, "hour": label, "state": state,
            "due_by": ist(hour + freshness), "checked_at": ist(now),
            "run_url": _run_url(run_id),
        }  # fmt: skip

        def claim(key: str = key, run_id: str = run_id, hour: datetime = hour) -> bool:
            try:
                store.insert_one({"_id": key, "run_id": run_id, "hour": hour, "state": "alerting", "claimed_at": now})
            except DuplicateKeyError:
                return False
            return True

        sent = _claimed(
            claim,
            lambda label=label, lines=lines: publish_alert(f"[leadflow] {REPORT_DAG_ID} {label} report is late", lines),
            lambda key=key: store.delete_one({"_id": key, "state": "alerting"}),
        )
        if sent:
            store.update_one({"_id": key}, {"$set": {"state": "late", "alerted_at": datetime.now(UTC)}})
            result.late.append(run_id)
            log.warning("Report run %s is late (state %s): alerted", run_id, state)
        else:
            result.already_alerted.append(run_id)
    late_docs = list(store.find({"state": "late", "hour": {"$gt": now - RECOVERY_HORIZON}}))
    has_landed = _landed_test(mark, hours_landed(db, [doc["hour"] for doc in late_docs]))
    for doc in late_docs:
        run_id = doc["run_id"]
        if not has_landed(doc["hour"]):
            continue
        label = doc["hour"].astimezone(IST).strftime("%Y-%m-%d %H:%M IST")

        def claim_recovery(key: str = doc["_id"]) -> bool:
            changed = store.update_one({"_id": key, "state": "late"}, {"$set": {"state": "recovering"}})
            return changed.modified_count == 1

        sent = _claimed(
            claim_recovery,
            lambda label=label, run_id=run_id: publish_alert(
                f"[leadflow] {REPORT_DAG_ID} {label} report recovered",
                {"dag": REPORT_DAG_ID, "run": run_id, "hour": label, "state": "landed", "run_url": _run_url(run_id)},
            ),
            lambda key=doc["_id"]: store.update_one({"_id": key, "state": "recovering"}, {"$set": {"state": "late"}}),
        )
        if sent:
            store.update_one({"_id": doc["_id"]}, {"$set": {"state": "recovered", "recovered_at": datetime.now(UTC)}})
            result.recovered.append(run_id)
    return result


def interval_start(hour: datetime) -> datetime:
    """Where the data interval of the run scheduled at ``hour`` starts (09:00 covers the night)."""
    local = hour.astimezone(IST)
    previous = timedelta(hours=24 - (LAST_HOUR - FIRST_HOUR)) if local.hour == FIRST_HOUR else timedelta(hours=1)
    return (local - previous).astimezone(UTC)


def _landed_test(mark: Landed | None, landed_hours: set[datetime]) -> Callable[[datetime], bool]:
    def has_landed(hour: datetime) -> bool:
        hour = hour.astimezone(UTC)
        if hour in landed_hours:
            return True
        # Every write before the watermark is in the sheets, if the change scans had begun by
        # the time the hour's interval started.
        if mark is None or mark.covered_from is None:
            return False
        return mark.covered_from <= interval_start(hour) and mark.read_at >= hour

    return has_landed
