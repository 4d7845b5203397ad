"""One-shot ``mongo-seed`` service: demo data for the compose stack's MongoDB, once.

Seeds only an empty ``leadflow`` database (so ``docker compose up`` again keeps what the DAGs and
you did), with the same generator and the same "ends at the next IST hour" window as ``make run``,
so the next scheduled ``interaction_reports`` run has data.

    python seed_mongo.py            LEADFLOW_MONGO_URI (default mongodb://mongo:27017),
                                    LEADFLOW_SEED_INTERACTIONS (default 3000)
"""

from __future__ import annotations

import os
from datetime import timedelta

import pymongo

from devstack.run import demo_end
from devstack.seed import SeedSpec, seed_database
from leadflow.config import DEFAULT_DATABASE, USERS


def main() -> None:
    uri = os.environ.get("LEADFLOW_MONGO_URI", "mongodb://mongo:27017")
    interactions = int(os.environ.get("LEADFLOW_SEED_INTERACTIONS", "3000"))
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=30_000) as client:
        existing = client[DEFAULT_DATABASE][USERS].estimated_document_count()
    if existing:
        print(f"{DEFAULT_DATABASE}.{USERS} already has {existing} documents: not seeding")
        return
    spec = SeedSpec(interactions=interactions, end=demo_end() + timedelta(hours=1))
    print("seeded demo data:", seed_database(uri, spec), flush=True)


if __name__ == "__main__":
    main()
