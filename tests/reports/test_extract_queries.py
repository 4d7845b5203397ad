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
from pymongo import monitoring

from leadflow.mongo_indexes import ensure_indexes
from leadflow.reports.extract import extract
from tests.reports import fixture


class FindCommands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_every_extract_query_uses_an_index(clean_stack) -> None:
    listener = FindCommands()
    with pymongo.MongoClient(clean_stack.mongo_uri, tz_aware=True, event_listeners=[listener]) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.users.insert_many(fixture.USERS)
        db.interactions.insert_many(fixture.INTERACTIONS)
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
