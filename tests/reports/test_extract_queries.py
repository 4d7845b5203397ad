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

        plans = {}
        for find in listener.finds:
            command = {k: find[k] for k in ("find", "filter", "hint", "projection") if k in find}
            plan = db.command("explain", command, verbosity="queryPlanner")["queryPlanner"]["winningPlan"]
            plans[str(find.get("filter"))] = plan
    scans = {query: plan for query, plan in plans.items() if "COLLSCAN" in str(plan)}
    assert not scans, scans


def test_each_interaction_is_read_once_and_a_session_with_an_unnamed_message_is_read_whole(clean_stack) -> None:
    listener = FindCommands()
    window = fixture.ist(20, 9, 45).astimezone(UTC), fixture.ist(20, 13, 0).astimezone(UTC)
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True, event_listeners=[listener]) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.users.insert_many(fixture.USERS)
        db.interactions.insert_many(fixture.INTERACTIONS)
        listener.interaction_ids.clear()
        named = extract(db, *window)
        # Every touched session names its user: read through the users only, each document once
        # (the window scan projects _id away and is not counted).
        returned = [i for i in listener.interaction_ids if i is not None]
        assert len(returned) == len(set(returned)) == len(named.interactions)
        assert {"S1", "S4"} <= set(named.touched_sessions)
        assert not [find for find in listener.finds if "session_id" in find["filter"]]

        db.interactions.insert_one(UNNAMED_IN_S4)
        listener.finds.clear()
        unnamed = extract(db, *window)
    session_finds = [find["filter"]["session_id"]["$in"] for find in listener.finds if "session_id" in find["filter"]]
    assert session_finds == [["S4"]]
    s4 = unnamed.interactions[unnamed.interactions["session_id"] == "S4"]
    assert sorted(map(str, s4["_id"])) == sorted(
        str(doc["_id"]) for doc in [*fixture.INTERACTIONS, UNNAMED_IN_S4] if doc.get("session_id") == "S4"
    )
    assert unnamed.interactions["_id"].is_unique
