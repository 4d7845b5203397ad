"""Read the touched sessions and users of a report window from MongoDB into pandas.

Every query is index-backed (see leadflow.mongo_indexes), projected to the fields the reports
use, and streamed in batches, so memory follows the touched data, not the collection size:
1. the window scan (``timestamp`` index) collects the touched session and user ids;
2. every interaction of the touched users is read by ``user_id`` (``user_id, role, timestamp``),
   asking for **both** forms of each id (ObjectId and its hex string), since messy data stores
   either and the consolidated row must not depend on which form an hour happened to see;
3. every interaction of the touched sessions is read by ``session_id`` (``session_id, timestamp``),
   for the ones step 2 cannot return (no user id, or another user's), in or out of the window;
   what step 2 already returned is dropped by ``_id``. Reading only the sessions a *window*
   message names no user in would read each interaction once, but misses a session's unnamed
   messages outside the window: at 1 M interactions, 10 of them, and 9,207 session rows then
   differed from the naive peer's (tests/reports/test_extract_queries.py keeps such a message);
4. the profiles of the users involved are read by ``_id`` (both forms again).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from bson import ObjectId
from pymongo.database import Database

from leadflow.config import INTERACTIONS, USERS
from leadflow.reports.transform import INTERACTION_FIELDS, USER_FIELDS, empty_interactions, empty_users

BATCH_SIZE = 5_000
# Short $in lists: as fast on MongoDB, and the secantus stand-in matches each fetched document
# against the whole list in Python (at 200 k interactions: extract 19.7 s with lists of 10 ids,
# 74.6 s with 200; python -m bench.reports --interactions 200000 --hot 20000).
ID_CHUNK = 10
INTERACTION_PROJECTION = {"_id": 1, "user_id": 1, "session_id": 1, "timestamp": 1, "intent": 1}
USER_PROJECTION = {
    "_id": 1, "name": 1, "mobile": 1, "preferred_configuration": 1, "ranking": 1,
    "site_visit.status": 1, "site_visit.scheduled_at": 1,
}  # fmt: skip


@dataclass
class Extracted:
    interactions: pd.DataFrame
    users: pd.DataFrame
    touched_sessions: list[str]
    touched_users: list[str]
    window_interactions: int


def _id_text(value: Any) -> str | None:
    """User ids as hex strings; a user_id typed as a string in messy data stays as it is."""
    if value is None:
        return None
    return str(value)


def _chunks(values: list[Any], size: int = ID_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _interaction_rows(cursor: Iterable[dict]) -> Iterator[dict]:
    for doc in cursor:
        timestamp = doc.get("timestamp")
        yield {
            "_id": str(doc["_id"]),
            "user_id": _id_text(doc.get("user_id")),
            "session_id": doc.get("session_id"),
            "timestamp": timestamp if isinstance(timestamp, datetime) else None,
            "intent": doc.get("intent"),
        }


def _frame(rows: Iterator[dict], columns: list[str], empty: pd.DataFrame) -> pd.DataFrame:
    """Build a frame batch by batch so no Python list of every document is ever held."""
    parts: list[pd.DataFrame] = []
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            parts.append(pd.DataFrame.from_records(batch, columns=columns))
            batch = []
    if batch:
        parts.append(pd.DataFrame.from_records(batch, columns=columns))
    if not parts:
        return empty
    frame = pd.concat(parts, ignore_index=True)
    for column in empty.columns:
        if str(empty[column].dtype).startswith("datetime64"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype({c: "object" for c in columns if c not in ("timestamp", "site_visit_scheduled_at")})


def touched_ids(db: Database, start: datetime, end: datetime) -> tuple[set[str], set[str], int]:
    """Touched session ids and touched user ids (as text), from the interactions in [start, end),
    and how many interactions that window holds."""
    sessions: set[str] = set()
    users: set[str] = set()
    count = 0
    cursor = db[INTERACTIONS].find(
        {"timestamp": {"$gte": start, "$lt": end}},
        {"_id": 0, "session_id": 1, "user_id": 1},
        batch_size=BATCH_SIZE,
    )
    for doc in cursor:
        count += 1
        session_id = doc.get("session_id")
        if isinstance(session_id, str) and session_id:
            sessions.add(session_id)
            user_id = doc.get("user_id")
            if user_id is not None:
                users.add(str(user_id))
    return sessions, users, count


def id_forms(ids: Iterable[str]) -> list[Any]:
    """Each id as every type it may be stored as: a 24-hex id as ObjectId and as string."""
    forms: list[Any] = []
    for value in sorted(set(ids)):
        if ObjectId.is_valid(value):
            forms.append(ObjectId(value))
        forms.append(value)
    return forms


def extract(db: Database, start: datetime, end: datetime) -> Extracted:
    sessions, users, window_count = touched_ids(db, start, end)
    user_forms = id_forms(users)

    def interaction_docs() -> Iterator[dict]:
        collection = db[INTERACTIONS]
        for chunk in _chunks(user_forms, ID_CHUNK * 2):
            yield from collection.find({"user_id": {"$in": chunk}}, INTERACTION_PROJECTION, batch_size=BATCH_SIZE)
        for chunk in _chunks(sorted(sessions)):
            # No exclusion of the users step 2 read ($nin): a planner may take the second
            # condition as a reason to scan the collection (the secantus stand-in does, and a
            # hint to session_ts makes it walk the whole index per query: minutes each at 200 k).
            # Step 2's copies are dropped below; MongoDB returns them at the cost of the wire only.
            yield from collection.find({"session_id": {"$in": chunk}}, INTERACTION_PROJECTION, batch_size=BATCH_SIZE)

    interactions = _frame(_interaction_rows(interaction_docs()), INTERACTION_FIELDS, empty_interactions())
    # Step 3 returns step 2's interactions again (a session's messages name its user): one copy each.
    interactions = interactions.drop_duplicates(subset="_id", ignore_index=True)

    involved = {*users, *(u for u in interactions["user_id"].dropna())}
    users_frame = _frame(_user_rows(db, id_forms(involved)), USER_FIELDS, empty_users())
    return Extracted(
        interactions=interactions,
        users=users_frame,
        touched_sessions=sorted(sessions),
        touched_users=sorted(users),
        window_interactions=window_count,
    )


def _user_rows(db: Database, ids: list[Any]) -> Iterator[dict]:
    for chunk in _chunks(ids, ID_CHUNK * 2):
        yield from _user_rows_from_docs(
            db[USERS].find({"_id": {"$in": chunk}}, USER_PROJECTION, batch_size=BATCH_SIZE)
        )


def _user_rows_from_docs(docs: Iterable[dict]) -> Iterator[dict]:
    for doc in docs:
        visit = doc.get("site_visit") if isinstance(doc.get("site_visit"), dict) else {}
        scheduled_at = visit.get("scheduled_at")
        yield {
            "user_id": str(doc["_id"]),
            "name": doc.get("name"),
            "mobile": doc.get("mobile"),
            "preferred_configuration": doc.get("preferred_configuration"),
            "ranking": doc.get("ranking"),
            "site_visit_status": visit.get("status"),
            "site_visit_scheduled_at": scheduled_at if isinstance(scheduled_at, datetime) else None,
        }
