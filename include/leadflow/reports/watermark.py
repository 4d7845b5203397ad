"""What has landed in the sheets: the report's change watermark and the hours that landed.

One document (``report_watermarks``, ``_id`` = the DAG id) holds
* ``read_at``: the latest MongoDB read time of a **successful** report run. Everything written
  before it is in the sheets. The next run reads the changes since ``read_at`` minus the overlap
  (writes that become visible late: a driver's retry, a clock a little behind, a write in flight
  while we read), so a failed run moves nothing and its changes are read again by the next one.
  ``$max``: a backfill that finishes after an on-time run cannot move it back.
* ``first_read_at``: when the runs started to record it (the freshness watchdog does not expect
  hours before it), and ``covered_from``: where the earliest successful change scan began. The
  first run has no watermark and covers its window only; from the second on, every write since
  ``covered_from`` is in the sheets once ``read_at`` passes it.

and one document per scheduled hour a successful run covered (``report_landed_hours``), so that
clearing or reprocessing an hour that landed raises no freshness alert.

Kept apart from :mod:`.pipeline` so that the tasks recording it import neither pandas nor the
Sheets client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo.database import Database

WATERMARKS = "report_watermarks"
LANDED_HOURS = "report_landed_hours"
REPORT_DAG_ID = "interaction_reports"


@dataclass(frozen=True)
class Landed:
    first_read_at: datetime
    read_at: datetime
    covered_from: datetime | None  # None until a run with a change scan has landed


def landed(db: Database, dag_id: str = REPORT_DAG_ID) -> Landed | None:
    doc = db[WATERMARKS].find_one({"_id": dag_id})
    if not doc:
        return None
    covered_from = doc.get("covered_from")
    return Landed(
        first_read_at=_utc(doc["first_read_at"]),
        read_at=_utc(doc["read_at"]),
        covered_from=_utc(covered_from) if covered_from else None,
    )


def changes_since(db: Database, overlap: timedelta, dag_id: str = REPORT_DAG_ID) -> datetime | None:
    """Where the next run's change scan starts; None before the first successful run."""
    mark = landed(db, dag_id)
    return None if mark is None else mark.read_at - overlap


def record_landed(
    db: Database, read_at: datetime, hour: datetime | None, since: datetime | None, dag_id: str = REPORT_DAG_ID
) -> Landed:
    """After a run's writes succeeded: its read time, the scheduled hour its window ends at, and
    where its change scan began (None: it had none)."""
    now = datetime.now(UTC)
    earliest = {"first_read_at": read_at} | ({"covered_from": since} if since is not None else {})
    db[WATERMARKS].update_one(
        {"_id": dag_id}, {"$max": {"read_at": read_at}, "$min": earliest, "$set": {"recorded_at": now}}, upsert=True
    )
    if hour is not None:
        db[LANDED_HOURS].update_one(
            {"_id": f"{dag_id}|{_utc(hour).isoformat()}"},
            {"$set": {"hour": _utc(hour), "landed_at": now}, "$min": {"first_landed_at": now}},
            upsert=True,
        )
    mark = landed(db, dag_id)
    assert mark is not None  # just written
    return mark


def record_step(extracted: dict[str, Any]) -> dict[str, Any]:
    """The report DAG's ``record_landed`` task: runs only when every write succeeded (or none was
    needed)."""
    from leadflow.mongo import get_database

    window = extracted["window"]
    # A manual run without a logical date covers a clock hour, not a scheduled interval (the
    # 09:00 run's is the night): it advances the watermark but lands no scheduled hour.
    hour = None if window["manual"] else datetime.fromisoformat(window["end"])
    since = extracted.get("changed_since")
    mark = record_landed(
        get_database(),
        datetime.fromisoformat(extracted["read_at"]),
        hour,
        datetime.fromisoformat(since) if since else None,
    )
    return {
        "changed_since": since,
        "changed_interactions": extracted.get("changed_interactions", 0),
        "changed_users": extracted.get("changed_users", 0),
        "watermark": mark.read_at.isoformat(),
        "hour": None if hour is None else hour.isoformat(),
    }


def hours_landed(db: Database, hours: list[datetime], dag_id: str = REPORT_DAG_ID) -> set[datetime]:
    """Which of ``hours`` a successful run had as its scheduled hour."""
    keys = [f"{dag_id}|{_utc(hour).isoformat()}" for hour in hours]
    return {_utc(doc["hour"]) for doc in db[LANDED_HOURS].find({"_id": {"$in": keys}}, {"hour": 1})}


def _utc(value: datetime) -> datetime:
    return datetime.fromtimestamp(value.timestamp(), UTC)
