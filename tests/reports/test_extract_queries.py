"""Every query the extract sends is answered from an index (issue 9, point 7).

The queries are captured at the wire (pymongo's command monitoring) and each is explained by the
MongoDB stand-in: a COLLSCAN anywhere in a winning plan means a read of every interaction per
query, which at 1 M interactions is minutes per report hour. A ``hint`` is refused too: the
stand-in answers a hinted find by walking the whole index (its explain still shows the bounded
IXSCAN), 169 s for one query at 200 k interactions against 1.4 s unhinted; only the planner's own
index choice is safe on both it and MongoDB.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import monitoring

from leadflow.mongo_indexes import ensure_indexes
from leadflow.reports.extract import extract
from tests.reports import fixture


class FindCommands(monitoring.CommandListener):
    """The find commands sent, and the ``_id`` of every interaction the server returned."""

    def __init__(self) -> None:
        self.finds: list[dict[str, Any]] = []
        self.interaction_ids: list[Any] = []
        self._interaction_requests: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.finds.append(dict(event.command))
        if event.command.get(event.command_name) == "interactions" or event.command.get("collection") == "interactions":
            self._interaction_requests.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._interaction_requests:
            cursor = event.reply.get("cursor", {})
            self.interaction_ids += [doc.get("_id") for doc in cursor.get("firstBatch", cursor.get("nextBatch", []))]

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


# A message that names no user, in S4's window hour: S4 is read by session_id too.
UNNAMED_IN_S4 = {"_id": ObjectId("66000000000000000000ff01"), "session_id": "S4", "role": "user", "text": "hi",
                 "timestamp": fixture.ist(20, 12, 7).astimezone(UTC), "intent": None}  # fmt: skip


def test_every_extract_query_uses_an_index(clean_stack) -> None:
    listener = FindCommands()
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True, event_listeners=[listener]) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.users.insert_many(fixture.USERS)
        db.interactions.insert_many([*fixture.INTERACTIONS, UNNAMED_IN_S4])
        listener.finds.clear()
        extracted = extract(db, fixture.ist(20, 9, 45).astimezone(UTC), fixture.ist(20, 13, 0).astimezone(UTC))
        assert len(extracted.interactions) > 0
        assert [find for find in listener.finds if "hint" in find] == []
        # Each of the four steps queried (window, users' interactions, sessions', profiles).
        assert {next(iter(find["filter"])) for find in listener.finds} >= {"timestamp", "user_id", "session_id", "_id"}

        # Each interaction comes back once: the window's from the window scan, the rest from
        # the query that alone can return it.
        returned = [str(i) for i in listener.interaction_ids]
        assert len(returned) == len(set(returned)) == len(extracted.interactions)

        plans = {}
        for find in listener.finds:
            command = {k: find[k] for k in ("find", "filter", "projection") if k in find}
            plans[str(find["filter"])] = _plan(db, command)
    scans = {query: plan for query, plan in plans.items() if "COLLSCAN" in str(plan)}
    assert not scans, scans


def _plan(db: Any, command: dict[str, Any]) -> Any:
    """The winning plan; for a filter of several clauses, the plan of its leading clause.

    The stand-in's explain reports a COLLSCAN for any filter with two operator clauses, while its
    find answers it from the leading clause's index and filters the candidates (at 300 k
    interactions: 1.9 s for ``{session_id: {$in}, user_id: {$nin}}``, as for ``session_id``
    alone, where a scan of the collection would take ~16 s at the 0.053 ms per document measured
    at 1 M). MongoDB plans the whole filter on the same index.
    """
    filter_ = command["filter"]
    if len(filter_) > 1:
        leading = next(iter(filter_))
        command = {**command, "filter": {leading: filter_[leading]}}
    return db.command("explain", command, verbosity="queryPlanner")["queryPlanner"]["winningPlan"]


def test_a_named_session_s_unnamed_message_outside_the_window_is_still_read(clean_stack) -> None:
    # S1's window messages (11:00-12:00) all name Ananya; one message before the window names
    # nobody. Reading S1 through its user only would miss it, and S1's row would start later.
    unnamed = {"_id": ObjectId("66000000000000000000ff02"), "session_id": "S1", "role": "user", "text": "hi",
               "timestamp": fixture.ist(20, 10, 40).astimezone(UTC), "intent": None}  # fmt: skip
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.users.insert_many(fixture.USERS)
        db.interactions.insert_many([*fixture.INTERACTIONS, unnamed])
        extracted = extract(db, fixture.ist(20, 11, 0).astimezone(UTC), fixture.ist(20, 12, 0).astimezone(UTC))
    s1 = extracted.interactions[extracted.interactions["session_id"] == "S1"]
    assert sorted(map(str, s1["_id"])) == sorted(
        str(doc["_id"]) for doc in [*fixture.INTERACTIONS, unnamed] if doc.get("session_id") == "S1"
    )
    assert extracted.interactions["_id"].is_unique


def test_the_change_scans_use_an_index_and_find_what_changed_outside_the_window(clean_stack) -> None:
    """Interactions written since the last run (by ``_id`` time) and profiles updated since (by
    ``updated_at``): both range reads are index scans, and they touch what no window would."""
    from datetime import datetime, timedelta

    since = datetime.now(UTC) - timedelta(minutes=1)
    listener = FindCommands()
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True, event_listeners=[listener]) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.users.insert_many(fixture.USERS)
        db.interactions.insert_many(fixture.INTERACTIONS)  # their _ids date from 2024: not changes
        # Written now into S7 (a session of the 19th), and Ananya's visit completed without a chat.
        db.interactions.insert_one({"user_id": fixture.U2, "session_id": "S7", "role": "user", "text": "late",
                                    "timestamp": fixture.ist(19, 18, 10).astimezone(UTC), "intent": None})  # fmt: skip
        db.users.update_one({"_id": fixture.U1}, {"$set": {"site_visit.status": "completed", "updated_at": since}})
        listener.finds.clear()
        window = (fixture.ist(20, 16, 45).astimezone(UTC), fixture.ist(20, 18, 0).astimezone(UTC))  # no chats
        extracted = extract(db, *window, changed_since=since)
        assert (extracted.changed_interactions, extracted.changed_users) == (1, 1)
        assert extracted.touched_users == sorted([str(fixture.U1), str(fixture.U2)])
        # Ananya's sessions (her name is on their rows) and the one the late message went into.
        assert extracted.touched_sessions == ["S1", "S2", "S7"]
        plans = {}
        for find in listener.finds:
            command = {k: find[k] for k in ("find", "filter", "projection") if k in find}
            plans[str(find["filter"])] = _plan(db, command)
    assert any("_id" in query and "$gte" in query for query in plans), plans
    assert any("updated_at" in query for query in plans), plans
    scans = {query: plan for query, plan in plans.items() if "COLLSCAN" in str(plan)}
    assert not scans, scans
