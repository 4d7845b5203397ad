"""Read the touched sessions and users of a report window from MongoDB into pandas.

Each interaction the reports need is returned once, by one of three index-backed queries,
projected to the fields the reports use and streamed in batches, so memory follows the touched
data, not the collection size:
1. the window scan (``timestamp``) returns the window's interactions, and with them the touched
   session ids, the users each session's window messages name, and the touched user ids;
2. the touched users' interactions *outside* the window, by ``user_id`` (``user_id, role,
   timestamp``), asking for **both** forms of each id (ObjectId and its hex string), since messy
   data stores either and the consolidated row must not depend on which form an hour saw;
3. the touched sessions' interactions outside the window that step 2 cannot return, by
   ``session_id`` (``session_id, timestamp``): the ones naming none of the users the session's
   window messages name (no user id, or another user's). Skipping this step misses a named
   session's unnamed message before the window (at 1 M interactions, 10 of them; see
   tests/reports/test_extract_queries.py);
4. the profiles of the users involved, by ``_id`` (both forms again).

The conditions beyond the leading field are evaluated by the server: MongoDB bounds the
timestamp on either index and checks ``user_id`` on the fetched document, returning only what
is new. The secantus stand-in uses the leading clause's index, fetches every candidate and
filters; it returns the same documents, but its fetches are those of reading the touched
sessions and users whole.
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


@dataclass
class WindowScan:
    """The window's interactions, the touched sessions with the users their window messages name,
    and the touched users (as text)."""

    interactions: pd.DataFrame
    sessions: dict[str, set[str]]
    users: set[str]
    count: int


def scan_window(db: Database, start: datetime, end: datetime) -> WindowScan:
    """Read the interactions in [start, end) once: they are report input and name what was touched."""
    sessions: dict[str, set[str]] = {}
    users: set[str] = set()
    count = 0

    def noted(docs: Iterable[dict]) -> Iterator[dict]:
        nonlocal count
        for doc in docs:
            count += 1
            session_id = doc.get("session_id")
            if isinstance(session_id, str) and session_id:
                named = sessions.setdefault(session_id, set())
                user_id = doc.get("user_id")
                if user_id is not None:
                    named.add(str(user_id))
                    users.add(str(user_id))
            yield doc

    cursor = db[INTERACTIONS].find(
        {"timestamp": {"$gte": start, "$lt": end}}, INTERACTION_PROJECTION, batch_size=BATCH_SIZE
    )
    frame = _frame(_interaction_rows(noted(cursor)), INTERACTION_FIELDS, empty_interactions())
    # A window message outside every touched session is input only through a touched user (as
    # the user query returns it), so the frame holds exactly what steps 2-3 would have read.
    in_session = frame["session_id"].map(lambda v: isinstance(v, str) and v != "")
    frame = frame.loc[in_session | frame["user_id"].isin(users)].reset_index(drop=True)
    return WindowScan(interactions=frame, sessions=sessions, users=users, count=count)


def id_forms(ids: Iterable[str]) -> list[Any]:
    """Each id as every type it may be stored as: a 24-hex id as ObjectId and as string."""
    forms: list[Any] = []
    for value in sorted(set(ids)):
        if ObjectId.is_valid(value):
            forms.append(ObjectId(value))
        forms.append(value)
    return forms


def extract(db: Database, start: datetime, end: datetime) -> Extracted:
    window = scan_window(db, start, end)
    outside_window = {"$not": {"$gte": start, "$lt": end}}  # null and missing timestamps included

    def interaction_docs() -> Iterator[dict]:
        collection = db[INTERACTIONS]
        for chunk in _chunks(id_forms(window.users), ID_CHUNK * 2):
            yield from collection.find(
                {"user_id": {"$in": chunk}, "timestamp": outside_window},
                INTERACTION_PROJECTION,
                batch_size=BATCH_SIZE,
            )
        for chunk in _chunks(sorted(window.sessions)):
            # What step 2 cannot return: a touched session's messages outside the window that
            # name none of the users its window messages name (no user id, or another user's).
            named = id_forms(set().union(*(window.sessions[s] for s in chunk)))
            yield from collection.find(
                {"session_id": {"$in": chunk}, "user_id": {"$nin": named}, "timestamp": outside_window},
                INTERACTION_PROJECTION,
                batch_size=BATCH_SIZE,
            )

    read = _frame(_interaction_rows(interaction_docs()), INTERACTION_FIELDS, empty_interactions())
    # A session's message naming a touched user other than the session's own comes back from
    # both step 2 and step 3: one copy each.
    interactions = pd.concat([window.interactions, read], ignore_index=True) if len(read) else window.interactions
    interactions = interactions.drop_duplicates(subset="_id", ignore_index=True)

    involved = {*window.users, *(u for u in interactions["user_id"].dropna())}
    users_frame = _frame(_user_rows(db, id_forms(involved)), USER_FIELDS, empty_users())
    return Extracted(
        interactions=interactions,
        users=users_frame,
        touched_sessions=sorted(window.sessions),
        touched_users=sorted(window.users),
        window_interactions=window.count,
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
