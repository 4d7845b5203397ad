"""Read the touched sessions and users of a report run from MongoDB into pandas.

What a run touches comes from two signals (see docs/report-convergence.md):
* the **window** (``timestamp`` in the run's data interval, lookback included), which makes a
  rerun or backfill of any hour recompute that hour's keys;
* the **changes** written since the last successful run (``changed_since``; none on the first
  run): interactions by ``_id`` (an ObjectId carries its write time; index ``_id, session_id,
  user_id``, so the scan reads only the index on MongoDB) and user profiles by ``updated_at``
  (index ``updated_at_1``). A changed interaction touches its session and its user, however late
  or old its ``timestamp``; a changed profile touches its lead and all the lead's sessions (their
  rows show the name and mobile).

Each interaction the reports need is then returned once by the window scan or by one of two
index-backed queries, projected to the fields the reports use and streamed in batches, so memory
follows the touched data, not the collection size:
1. the window scan (``timestamp``) returns the window's interactions, and with them the touched
   session ids, the users each session's window messages name, and the touched user ids; the
   change scans (keys only) add sessions and users;
2. the touched users' interactions *outside* the window, by ``user_id`` (``user_id, role,
   timestamp``), asking for **every** form of each id (ObjectId, its hex string, an integer...),
   since messy data stores any and the consolidated row must not depend on which form an hour saw;
3. the touched sessions' interactions outside the window that step 2 cannot return, by
   ``session_id`` (``session_id, timestamp``): the ones naming none of the users step 2 read for
   that session (no user id, or another user's). Skipping this step misses a named session's
   unnamed message before the window (at 1 M interactions, 10 of them; see
   tests/reports/test_extract_queries.py);
4. the profiles of the users involved, by ``_id`` (every form again).

The conditions beyond the leading field are evaluated by the server: MongoDB bounds the
timestamp on either index and checks ``user_id`` on the fetched document, returning only what
is new. The secantus stand-in uses the leading clause's index, fetches every candidate and
filters; it returns the same documents, but its fetches are those of reading the touched
sessions and users whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
    changed_interactions: int = 0  # written since ``changed_since``, whatever their timestamp
    changed_users: int = 0  # profiles updated since ``changed_since``


_INTEGER = re.compile(r"-?[0-9]+")
_INT64 = 2**63


def id_text(value: Any) -> str | None:
    """One text per user id, whatever type stores it: an ObjectId as its hex string, a whole number
    (int, Int64 or a float like 42.0) as its digits, a string as it is. MongoDB compares numbers
    across types, so ``42``, ``Int64(42)`` and ``42.0`` are one user, and so they are here."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _chunks(values: list[Any], size: int = ID_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _interaction_rows(cursor: Iterable[dict]) -> Iterator[dict]:
    for doc in cursor:
        timestamp = doc.get("timestamp")
        yield {
            "_id": str(doc["_id"]),
            "user_id": id_text(doc.get("user_id")),
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
class Touched:
    """Sessions (with the users their messages name) and users a run recomputes."""

    sessions: dict[str, set[str]] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    count: int = 0

    def note(self, doc: dict) -> None:
        self.count += 1
        user_id = id_text(doc.get("user_id"))
        if user_id is not None:
            self.users.add(user_id)
        session_id = doc.get("session_id")
        if isinstance(session_id, str) and session_id:
            named = self.sessions.setdefault(session_id, set())
            if user_id is not None:
                named.add(user_id)


@dataclass
class WindowScan:
    """The window's interactions, the touched sessions with the users their window messages name,
    and the touched users (as text)."""

    interactions: pd.DataFrame
    sessions: dict[str, set[str]]
    users: set[str]
    count: int


def _noted(docs: Iterable[dict], touched: Touched) -> Iterator[dict]:
    for doc in docs:
        touched.note(doc)
        yield doc


def scan_window(db: Database, start: datetime, end: datetime) -> WindowScan:
    """Read the interactions in [start, end) once: they are report input and name what was touched."""
    touched = Touched()
    cursor = db[INTERACTIONS].find(
        {"timestamp": {"$gte": start, "$lt": end}}, INTERACTION_PROJECTION, batch_size=BATCH_SIZE
    )
    frame = _frame(_interaction_rows(_noted(cursor, touched)), INTERACTION_FIELDS, empty_interactions())
    return WindowScan(interactions=frame, sessions=touched.sessions, users=touched.users, count=touched.count)


def id_forms(ids: Iterable[str]) -> list[Any]:
    """Each id (as ``id_text`` wrote it) as every type it may be stored as: the string itself, a
    24-hex id as ObjectId, digits as a number (which matches int, Int64 and double on MongoDB), a
    decimal text as a double."""
    forms: list[Any] = []
    for value in sorted(set(ids)):
        if ObjectId.is_valid(value):
            forms.append(ObjectId(value))
        elif _INTEGER.fullmatch(value) and -_INT64 <= int(value) < _INT64:
            forms.append(int(value))
        else:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                forms.append(number)
        forms.append(value)
    return forms


def changed_interaction_filter(since: datetime) -> dict[str, Any]:
    """Interactions written at or after ``since``: an ObjectId's first 4 bytes are its creation
    second. Only ObjectId ``_id``s match (MongoDB compares a range within one BSON type)."""
    return {"_id": {"$gte": ObjectId.from_datetime(since)}}


def scan_changes(db: Database, since: datetime) -> tuple[Touched, set[str]]:
    """What was written since ``since``: the interactions' sessions and users (keys only: the
    reads that follow return the documents), and the users whose profile changed."""
    touched = Touched()
    for doc in db[INTERACTIONS].find(
        changed_interaction_filter(since), {"_id": 1, "session_id": 1, "user_id": 1}, batch_size=BATCH_SIZE
    ):
        touched.note(doc)
    profiles = {
        text
        for doc in db[USERS].find({"updated_at": {"$gte": since}}, {"_id": 1}, batch_size=BATCH_SIZE)
        if (text := id_text(doc["_id"])) is not None
    }
    return touched, profiles


def extract(db: Database, start: datetime, end: datetime, changed_since: datetime | None = None) -> Extracted:
    """The report input for the window [start, end) and for what changed since ``changed_since``."""
    window = scan_window(db, start, end)
    sessions = {s: set(named) for s, named in window.sessions.items()}
    users = set(window.users)
    changes, changed_profiles = (Touched(), set()) if changed_since is None else scan_changes(db, changed_since)
    for session_id, named in changes.sessions.items():
        sessions.setdefault(session_id, set()).update(named)
    users |= changes.users
    outside_window = {"$not": {"$gte": start, "$lt": end}}  # null and missing timestamps included
    collection = db[INTERACTIONS]

    def user_docs(ids: set[str]) -> Iterator[dict]:
        for chunk in _chunks(id_forms(ids), ID_CHUNK * 2):
            yield from collection.find(
                {"user_id": {"$in": chunk}, "timestamp": outside_window}, INTERACTION_PROJECTION, batch_size=BATCH_SIZE
            )

    by_user = _frame(_interaction_rows(user_docs(users | changed_profiles)), INTERACTION_FIELDS, empty_interactions())
    # A changed profile touches its lead (if it ever chatted) and every session it chatted in.
    profile_rows = pd.concat([window.interactions, by_user], ignore_index=True)
    profile_rows = profile_rows.loc[profile_rows["user_id"].isin(changed_profiles)]
    for session_id, user_id in zip(profile_rows["session_id"], profile_rows["user_id"], strict=True):
        if isinstance(session_id, str) and session_id:
            sessions.setdefault(session_id, set()).add(user_id)
    users |= set(profile_rows["user_id"])

    def session_docs() -> Iterator[dict]:
        for chunk in _chunks(sorted(sessions)):
            # What step 2 cannot return: a touched session's messages outside the window that
            # name none of the users step 2 read for it (no user id, or another user's).
            named = id_forms(set().union(*(sessions[s] for s in chunk)))
            yield from collection.find(
                {"session_id": {"$in": chunk}, "user_id": {"$nin": named}, "timestamp": outside_window},
                INTERACTION_PROJECTION,
                batch_size=BATCH_SIZE,
            )

    by_session = _frame(_interaction_rows(session_docs()), INTERACTION_FIELDS, empty_interactions())
    parts = [frame for frame in (window.interactions, by_user, by_session) if len(frame)]
    interactions = pd.concat(parts, ignore_index=True) if parts else empty_interactions()
    # A session's message naming a touched user other than the session's own comes back from
    # both step 2 and step 3: one copy each.
    interactions = interactions.drop_duplicates(subset="_id", ignore_index=True)
    # A message outside every touched session is input only through a touched user.
    in_session = interactions["session_id"].map(lambda v: isinstance(v, str) and v != "")
    interactions = interactions.loc[in_session | interactions["user_id"].isin(users)].reset_index(drop=True)

    involved = {*users, *(u for u in interactions["user_id"].dropna())}
    users_frame = _frame(_user_rows(db, id_forms(involved)), USER_FIELDS, empty_users())
    return Extracted(
        interactions=interactions,
        users=users_frame,
        touched_sessions=sorted(sessions),
        touched_users=sorted(users),
        window_interactions=window.count,
        changed_interactions=changes.count,
        changed_users=len(changed_profiles),
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
            "user_id": id_text(doc["_id"]),
            "name": doc.get("name"),
            "mobile": doc.get("mobile"),
            "preferred_configuration": doc.get("preferred_configuration"),
            "ranking": doc.get("ranking"),
            "site_visit_status": visit.get("status"),
            "site_visit_scheduled_at": scheduled_at if isinstance(scheduled_at, datetime) else None,
        }
