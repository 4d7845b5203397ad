"""The MongoDB indexes the DAGs rely on. Creating them is idempotent and cheap when they exist.

Run by the ``ensure_indexes`` task of ``interaction_reports`` and by the demo seed; by hand:

    python -m leadflow.mongo_indexes mongodb://host:27017 [database]
"""

from __future__ import annotations

import sys

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from leadflow.config import DEFAULT_DATABASE, DELIVERIES, INTERACTIONS, USERS

PLANS = "followup_plans"  # the planner's own record (leadflow.planner.enqueue)
SESSION_TS = "session_ts"

INDEXES: dict[str, list[IndexModel]] = {
    INTERACTIONS: [
        # The report's window scan: which sessions and users were touched in an hour.
        IndexModel([("timestamp", ASCENDING)], name="timestamp_1"),
        # All interactions of the touched sessions, in order.
        IndexModel([("session_id", ASCENDING), ("timestamp", ASCENDING)], name=SESSION_TS),
        # All interactions of the touched users; the follow-ups' "last message from the user".
        IndexModel(
            [("user_id", ASCENDING), ("role", ASCENDING), ("timestamp", DESCENDING)],
            name="user_role_ts",
        ),
    ],
    # followup_deliveries is keyed by _id = event_id, which MongoDB always indexes uniquely.
}

# -- interaction_reports' change scan (leadflow.reports.extract.scan_changes); additive ---------
INDEXES[INTERACTIONS].append(
    # Interactions written since the last successful run, by the ObjectId's time. MongoDB's own
    # _id index would bound the range too; this one also covers the keys the scan projects (no
    # document fetch), and the secantus stand-in serves _id ranges only from a secondary index.
    IndexModel([("_id", ASCENDING), ("session_id", ASCENDING), ("user_id", ASCENDING)], name="id_session_user")
)
USERS_CHANGED = IndexModel([("updated_at", ASCENDING)], name="updated_at_1")  # profiles changed since

# -- followup_planner (leadflow.planner.candidates); additive ------------------------------------
INDEXES[INTERACTIONS].append(
    # Cost-sheet rule: who wrote to us between 7 days and 2 hours before the planning point.
    IndexModel([("role", ASCENDING), ("timestamp", ASCENDING), ("user_id", ASCENDING)], name="role_ts_user")
)
INDEXES[USERS] = [
    # Site-visit reminders: scheduled visits in the next minutes.
    IndexModel([("site_visit.status", ASCENDING), ("site_visit.scheduled_at", ASCENDING)], name="site_visit_status_at"),
    # Hot-lead nudges: the users of one ranking.
    IndexModel([("ranking", ASCENDING)], name="ranking_1"),
    USERS_CHANGED,
]
INDEXES.setdefault(DELIVERIES, []).append(
    # "Was this user followed up since ...": by user and event type, any producer.
    IndexModel(
        [("user_id", ASCENDING), ("event_type", ASCENDING), ("created_at", DESCENDING)], name="user_type_created"
    )
)
INDEXES[PLANS] = [
    IndexModel(
        [("user_id", ASCENDING), ("event_type", ASCENDING), ("planning_point", DESCENDING)], name="user_type_point"
    ),
    # The Leadflow UI page: events planned per IST day of the last week.
    IndexModel([("enqueued_at", ASCENDING)], name="enqueued_at_1"),
]

# -- interaction_reports' lead row index (leadflow.reports.row_index); additive -----------------
# Keys are looked up by _id; a tab whose rows are re-read drops its entries by tab; a tab's
# next free row is its last entry's row + 1.
INDEXES["report_rows_consolidated"] = [IndexModel([("tab", ASCENDING), ("row", DESCENDING)], name="tab_row")]


def ensure_indexes(db: Database) -> list[str]:
    created: list[str] = []
    for collection, models in INDEXES.items():
        created += db[collection].create_indexes(models)
    return created


if __name__ == "__main__":
    import pymongo

    uri = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_DATABASE
    with pymongo.MongoClient(uri) as client:
        print(ensure_indexes(client[name]))
