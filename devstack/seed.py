"""Deterministic, realistic demo data for the ``leadflow`` database.

Same seed, same documents. Scales from a hundred interactions to millions (inserted in batches,
generated lazily so memory stays flat), with the messy cases real chat data has: missing names,
rankings of the wrong type, null timestamps, unknown user ids, documents without a session.

    python -m devstack.seed --uri mongodb://127.0.0.1:27018 --interactions 5000
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bson import ObjectId

from leadflow.config import DEFAULT_DATABASE, INTERACTIONS, USERS
from leadflow.mongo_indexes import ensure_indexes

IST = ZoneInfo("Asia/Kolkata")
FIRST_NAMES = [
    "Aarav", "Vivaan", "Aditya", "Vihaan", "Arjun", "Sai", "Reyansh", "Ayaan", "Krishna", "Ishaan",
    "Ananya", "Diya", "Aadhya", "Saanvi", "Pari", "Anika", "Navya", "Myra", "Kavya", "Priya",
    "Rohan", "Meera", "Lakshmi", "Suresh", "Ramesh", "Deepa", "Farhan", "Zoya", "Gurpreet", "Harleen",
]  # fmt: skip
LAST_NAMES = [
    "Sharma", "Verma", "Iyer", "Reddy", "Nair", "Patel", "Shah", "Mehta", "Gupta", "Singh",
    "Khan", "Das", "Bose", "Jain", "Kulkarni", "Deshpande", "Menon", "Pillai", "Chopra", "Joshi",
]  # fmt: skip
CONFIGS = ["1BHK", "2BHK", "3BHK", "4BHK"]
RANKINGS = ["High", "Medium", "Low"]
INTENTS = ["Site Visit", "Cost Sheet", "Pricing", "Amenities", "Location"]
USER_LINES = [
    "Hi, I saw your ad for the new project", "What is the price of a {cfg}?",
    "Can I visit the site this weekend?", "Please share the cost sheet", "Is there a clubhouse?",
    "How far is it from the metro?", "Do you offer home loans?", "What is the possession date?",
]  # fmt: skip
ASSISTANT_LINES = [
    "Happy to help! Which configuration are you looking for?", "A {cfg} starts at ₹1.2 Cr.",
    "Sure, I can book a site visit for you.", "I have shared the cost sheet on WhatsApp.",
    "Yes, the clubhouse has a pool and a gym.", "The metro station is 800 m away.",
]  # fmt: skip


@dataclass(frozen=True)
class SeedSpec:
    interactions: int = 2_000
    seed: int = 42
    # Sessions fall in the days before ``end`` (IST); the newest ones touch the last hours.
    end: datetime = datetime(2026, 11, 20, 21, 0, tzinfo=IST)
    days: int = 7
    # For benchmarks: this many extra interactions land in the hour before ``end``.
    hot_hour_interactions: int = 0
    # Roughly one messy document per this many interactions.
    messy_every: int = 97


def _mobile(rng: random.Random) -> str:
    digits = f"{rng.choice('6789')}{rng.randrange(10**8, 10**9):09d}"
    style = rng.randrange(6)
    if style == 0:
        return digits
    if style == 1:
        return f"+91 {digits[:5]} {digits[5:]}"
    if style == 2:
        return f"0{digits[:5]}-{digits[5:]}"
    if style == 3:
        return f"+91{digits}"
    if style == 4:
        return f"91-{digits}"
    return rng.choice(["12345", "not given", "98765"])  # invalid numbers people type


def make_users(spec: SeedSpec, count: int) -> list[dict]:
    rng = random.Random(spec.seed)
    start = spec.end - timedelta(days=spec.days + 30)
    users = []
    for i in range(count):
        created = start + timedelta(minutes=rng.randrange(0, 30 * 24 * 60))
        user: dict = {
            "_id": ObjectId(f"{0x65000000 + i:08x}{rng.getrandbits(64):016x}"),
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            "mobile": _mobile(rng),
            "preferred_configuration": (
                rng.sample(CONFIGS, 2) if rng.random() < 0.2 else rng.choice(CONFIGS)
            ),
            "ranking": rng.choice(RANKINGS),
            "inquiry_type": rng.choice(["site_visit", "cost_sheet", "general"]),
            "created_at": created.astimezone(UTC),
            "updated_at": created.astimezone(UTC),
        }
        if rng.random() < 0.4:
            visit = spec.end + timedelta(days=rng.randrange(-3, 5), hours=rng.randrange(-4, 4))
            user["site_visit"] = {
                "scheduled_at": visit.replace(minute=0, second=0).astimezone(UTC),
                "status": rng.choice(["scheduled", "scheduled", "completed", "cancelled"]),
            }
        if rng.random() < 0.05:
            user["whatsapp_opt_in"] = False
        if i % spec.messy_every == 1:  # messy profiles real data has
            rng.choice([
                lambda u: u.pop("name"),
                lambda u: u.update(ranking=3),
                lambda u: u.update(name=None),
                lambda u: u.update(preferred_configuration=None),
            ])(user)  # fmt: skip
        users.append(user)
    return users


def _session_start(rng: random.Random, spec: SeedSpec) -> datetime:
    day = (spec.end - timedelta(days=rng.randrange(0, spec.days))).date()
    roll = rng.random()
    if roll < 0.08:  # night owls: 21:00-02:00 IST
        hour = rng.choice([21, 22, 23, 0, 1])
    elif roll < 0.15:  # start just before the hour so the session crosses it
        return datetime(day.year, day.month, day.day, rng.randrange(9, 21), 52, tzinfo=IST)
    else:
        hour = rng.randrange(8, 21)
    return datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=IST)



def written_at(when: datetime) -> ObjectId:
    """A unique ObjectId whose time is ``when`` (at the latest now): the demo's messages were
    written by the chatbot as they were sent, so the reports' change scan (which reads what was
    written since the last successful run, by ``_id`` time) does not take the seed for new data."""
    seconds = int(min(when.timestamp(), datetime.now(UTC).timestamp()))
    return ObjectId(seconds.to_bytes(4, "big") + ObjectId().binary[4:])


def iter_interactions(spec: SeedSpec, users: list[dict]) -> Iterator[dict]:
    """Yield interaction documents, session by session (lazy: memory stays flat)."""
    rng = random.Random(spec.seed + 1)
    produced = 0
    session_no = 0

    def session(user_id: ObjectId, start: datetime, length: int) -> Iterator[dict]:
        nonlocal session_no
        session_no += 1
        sid = f"s-{spec.seed}-{session_no:07d}"
        ts = start
        cfg = CONFIGS[session_no % 4]
        for k in range(length):
            role = "user" if k % 2 == 0 else "assistant"
            lines = USER_LINES if role == "user" else ASSISTANT_LINES
            intent = rng.choice(INTENTS) if role == "user" and rng.random() < 0.6 else None
            yield {
                "_id": written_at(ts),
                "user_id": user_id,
                "session_id": sid,
                "role": role,
                "text": rng.choice(lines).format(cfg=cfg),
                "timestamp": ts.astimezone(UTC),
                "intent": intent,
            }
            ts += timedelta(seconds=rng.randrange(15, 240))

    while produced < spec.interactions:
        user = users[rng.randrange(len(users))]
        length = min(rng.randrange(2, 24), spec.interactions - produced)
        for doc in session(user["_id"], _session_start(rng, spec), length):
            produced += 1
            if produced % spec.messy_every == 0:
                _make_messy(rng, doc)
            yield doc

    hot_start = spec.end - timedelta(hours=1)
    hot = 0
    while hot < spec.hot_hour_interactions:
        user = users[rng.randrange(len(users))]
        length = min(rng.randrange(2, 24), spec.hot_hour_interactions - hot)
        start = hot_start + timedelta(seconds=rng.randrange(0, 40 * 60))
        for doc in session(user["_id"], start, length):
            hot += 1
            yield doc


def _make_messy(rng: random.Random, doc: dict) -> None:
    kind = rng.randrange(4)
    if kind == 0:
        doc["user_id"] = ObjectId()  # a user the users collection does not know
    elif kind == 1:
        doc["timestamp"] = None
    elif kind == 2:
        doc.pop("session_id")
    else:
        doc["intent"] = 7  # wrong type


# -- followup_planner demo (additive): buyers whose visits fall in the next hours --------------

PLANNER_DEMO_VISITS = range(-3, 13)  # visits every 15 minutes from end - 45 min to end + 3 h


def planner_demo_users(spec: SeedSpec) -> list[dict]:
    """Buyers with a scheduled site visit every 15 minutes around ``spec.end`` (``make run``:
    the top of the next hour), so the planner's reminders land in ``make outbox`` one by one:
    the ones already over get none, the next ones arrive 15 minutes before their visit."""
    rng = random.Random(spec.seed + 10)
    users = []
    for n, step in enumerate(PLANNER_DEMO_VISITS):
        visit = (spec.end + timedelta(minutes=15 * step)).astimezone(UTC)
        users.append({
            "_id": ObjectId(f"{0x66000000 + n:08x}{rng.getrandbits(64):016x}"),
            "name": f"{FIRST_NAMES[n % len(FIRST_NAMES)]} {LAST_NAMES[n % len(LAST_NAMES)]}",
            "mobile": f"+91 9{rng.randrange(10**8, 10**9):09d}",
            "preferred_configuration": CONFIGS[n % len(CONFIGS)],
            "ranking": "Medium",
            "inquiry_type": "site_visit",
            "site_visit": {"scheduled_at": visit, "status": "scheduled"},
            "created_at": (spec.end - timedelta(days=2)).astimezone(UTC),
            "updated_at": (spec.end - timedelta(days=2)).astimezone(UTC),
        })  # fmt: skip
    return users


def seed_database(
    uri: str, spec: SeedSpec, database: str = DEFAULT_DATABASE, batch_size: int = 10_000
) -> dict[str, int]:
    """Replace the users and interactions collections with generated data; returns counts."""
    import pymongo

    with pymongo.MongoClient(uri, tz_aware=True) as client:
        db = client[database]
        db[USERS].drop()
        db[INTERACTIONS].drop()
        users = make_users(spec, max(5, (spec.interactions + spec.hot_hour_interactions) // 20))
        db[USERS].insert_many(users, ordered=False)
        demo_visits = planner_demo_users(spec)  # followup_planner demo
        db[USERS].insert_many(demo_visits, ordered=False)
        batch: list[dict] = []
        total = 0
        for doc in iter_interactions(spec, users):
            batch.append(doc)
            if len(batch) >= batch_size:
                db[INTERACTIONS].insert_many(batch, ordered=False)
                total += len(batch)
                batch = []
        if batch:
            db[INTERACTIONS].insert_many(batch, ordered=False)
            total += len(batch)
        ensure_indexes(db)
    return {"users": len(users), "interactions": total, "demo_visits": len(demo_visits)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--interactions", type=int, default=SeedSpec.interactions)
    parser.add_argument("--hot-hour-interactions", type=int, default=0)
    parser.add_argument("--seed", type=int, default=SeedSpec.seed)
    parser.add_argument("--end", help="IST end of the data, e.g. 2026-11-20T21:00 (default: fixed)")
    args = parser.parse_args(argv)
    end = datetime.fromisoformat(args.end).replace(tzinfo=IST) if args.end else SeedSpec.end
    spec = SeedSpec(
        interactions=args.interactions,
        seed=args.seed,
        end=end,
        hot_hour_interactions=args.hot_hour_interactions,
    )
    print(seed_database(args.uri, spec, args.database))


if __name__ == "__main__":
    main()
