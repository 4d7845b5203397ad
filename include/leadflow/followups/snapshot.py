"""What every message of a batch needs to read, fetched for the whole batch in a few bulk queries.

Only reads: the ledger documents (a snapshot, used to short-cut duplicates and reuse stored
texts; every decision that matters is still an atomic, state-guarded ledger write), the users,
each user's latest message to us (the 24 h customer-service window) and latest send (pacing).
At 80 msg/s four round trips per message would add up; this is four per 500 messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from leadflow.config import INTERACTIONS, USERS
from leadflow.followups.contract import FollowupEvent
from leadflow.marketing import USER_FIELDS as MARKETING_FIELDS
from leadflow.messaging.ledger import Ledger

# The customer-service window is 24 h from the user's last message; our copy of that message is
# written a moment after Meta received it, so stay a little on the safe side.
SERVICE_WINDOW = timedelta(hours=24) - timedelta(minutes=5)
USER_FIELDS = {
    "name": 1,
    "mobile": 1,
    "preferred_configuration": 1,
    "inquiry_type": 1,
    "whatsapp_opt_in": 1,
    "site_visit": 1,
    **MARKETING_FIELDS,  # the buyer's marketing opt-out / Meta's 24 h limit (leadflow.marketing)
}
PREFETCH_CHUNK = 500


def _chunks(items: list[Any], size: int = PREFETCH_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BatchSnapshot:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.ledger = ledger
        self.users = db[USERS]
        self.interactions = db[INTERACTIONS]
        self.docs: dict[str, dict[str, Any]] = {}
        self._users: dict[ObjectId, dict[str, Any]] = {}
        self._last_user_message: dict[ObjectId, datetime] = {}
        self._last_sent: dict[str, datetime] = {}

    def load(self, events: list[FollowupEvent], now: datetime) -> None:
        self.docs, self._users, self._last_user_message, self._last_sent = {}, {}, {}, {}
        self.add(events, now)

    def add(self, events: list[FollowupEvent], now: datetime) -> None:
        """Read what ``events`` need on top of what is loaded (a later receive of the same run);
        fresher reads replace older ones, while worker threads read the rest."""
        keys = list({e.event_id for e in events})
        user_ids = list({e.user_object_id for e in events})
        since = now - SERVICE_WINDOW - timedelta(minutes=10)
        for chunk in _chunks(keys):
            self.docs.update((d["_id"], d) for d in self.ledger.collection.find({"_id": {"$in": chunk}}))
        for chunk in _chunks(user_ids):
            as_text = [str(u) for u in chunk]
            # A user's _id may be stored as an ObjectId or as its hex string (both happen in
            # imported data); look up both, the ObjectId document wins if both exist.
            found = self.users.find({"_id": {"$in": chunk + as_text}}, projection=USER_FIELDS)
            for user in sorted(found, key=lambda u: isinstance(u["_id"], ObjectId)):
                if ObjectId.is_valid(user["_id"]):
                    self._users[ObjectId(str(user["_id"]))] = user
            # Only messages inside the window matter (index user_id, role, timestamp).
            recent = self.interactions.find(
                {"user_id": {"$in": chunk + as_text}, "role": "user", "timestamp": {"$gte": since}},
                projection={"_id": 0, "user_id": 1, "timestamp": 1},
            )
            for row in recent:
                stamp, uid = row.get("timestamp"), row.get("user_id")
                if not isinstance(stamp, datetime) or not ObjectId.is_valid(uid):
                    continue
                oid, stamp = ObjectId(str(uid)), stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
                previous = self._last_user_message.get(oid)
                self._last_user_message[oid] = stamp if previous is None else max(previous, stamp)
            self._last_sent.update(self.ledger.last_sent_by_user(as_text))

    def doc(self, key: str) -> dict[str, Any] | None:
        return self.docs.get(key)

    def refresh(self, key: str) -> None:
        """Re-read one ledger document (a later copy of an event the batch already handled)."""
        fresh = self.ledger.get(key)
        if fresh is not None:
            self.docs[key] = fresh

    def user(self, user_id: ObjectId) -> dict[str, Any] | None:
        return self._users.get(user_id)

    def last_sent(self, user_id: str) -> datetime | None:
        return self._last_sent.get(user_id)

    def window_open(self, user_id: ObjectId, now: datetime) -> bool:
        """Whether the user's latest message to us is recent enough for free-form messages."""
        stamp = self._last_user_message.get(user_id)
        if stamp is None:
            return False
        age = now - stamp
        return -timedelta(minutes=5) <= age < SERVICE_WINDOW
