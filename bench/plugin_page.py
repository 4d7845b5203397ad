"""How long the Leadflow page takes to answer with a large ledger (target: < 1 s at 100 k documents).

    .venv/bin/python -m bench.plugin_page [--ledger 100000] [--days 180] [--repeat 10]

Seeds ``--ledger`` follow-up documents spread evenly over the last ``--days`` days (every state,
reasons, receipts with pricing, OpenAI usage) plus one plan per five events into the Mongo
stand-in, with the indexes the DAGs create; then asks Airflow's own api app (the plugin loaded
from plugins/, the simple auth manager, an admin token) for the page and its JSON ``--repeat``
times each and prints the median and the slowest answer. The queries read only the last 8 IST
days, so the figure follows the events of one week, not the size of the ledger: the second
line (the same week with a tenth of the history) shows it. The ledger reads are also timed alone,
and the load average is printed: on a shared machine the figures follow it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATES = ["sent"] * 6 + ["skipped", "failed", "dead_lettered", "unknown_outcome", "pending"]
BATCH = 5_000


def ledger_docs(count: int, days: int, now: datetime, rng: random.Random, start: int = 0):
    span = days * 24 * 3600
    for n in range(start, start + count):
        created = now - timedelta(seconds=span * (n - start) / count)
        state = rng.choice(STATES)
        doc = {
            "_id": f"inquiry_followup:{n}:{created.date()}",
            "event_type": rng.choice(["site_visit_reminder", "cost_sheet_followup", "inquiry_followup"]),
            "user_id": str(n % 20_000),
            "state": state,
            "reason": rng.choice(["expired", "opted_out", "invalid_phone"]) if state != "sent" else None,
            "error_code": rng.choice(["131026", "131047"]) if state == "failed" else None,
            "text_source": "openai",
            "fallback_reason": "openai_error" if rng.random() < 0.05 else None,
            "openai_usage": {"model": "gpt-4o-mini", "prompt_tokens": 420, "completion_tokens": 70},
            "created_at": created,
            "updated_at": created + timedelta(minutes=rng.randrange(0, 120)),
        }
        if state == "sent":
            doc["delivery"] = {
                "status": rng.choice(["sent", "delivered", "read"]),
                "pricing": {"category": "utility", "type": "regular", "pricing_model": "PMP", "billable": True},
            }
        yield doc


def seed(db, count: int, days: int, now: datetime) -> None:
    from leadflow.messaging.ledger import INDEXES as LEDGER_INDEXES
    from leadflow.mongo_indexes import ensure_indexes

    rng = random.Random(7)
    db.followup_deliveries.drop()
    db.followup_plans.drop()
    ensure_indexes(db)
    db.followup_deliveries.create_indexes(LEDGER_INDEXES)
    docs = list(ledger_docs(count, days, now, rng))
    for start in range(0, len(docs), BATCH):
        db.followup_deliveries.insert_many(docs[start : start + BATCH], ordered=False)
    plans = [{"_id": f"plan-{n}", "enqueued_at": doc["created_at"]} for n, doc in enumerate(docs[::5])]
    for start in range(0, len(plans), BATCH):
        db.followup_plans.insert_many(plans[start : start + BATCH], ordered=False)


def timed(client, path: str, headers: dict[str, str], repeat: int) -> list[float]:
    client.get(path, headers=headers).raise_for_status()  # warm: imports, the Mongo client, caches
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(path, headers=headers).raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ledger", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="leadflow-bench-plugin-"))
    from devstack.airflow_home import airflow_env, prepare_home

    os.environ.update(airflow_env(home))
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"  # as `airflow api-server` sets it
    sys.path.insert(0, str(REPO / "plugins"))
    prepare_home(home)

    import pymongo

    from devstack.airflow_settings import apply_settings, read_settings
    from devstack.services import running_stack

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with running_stack(home / "stack", mongo_standalone=True) as stack:
        apply_settings(read_settings(stack=stack))
        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from fastapi.testclient import TestClient

        from devstack.run import sync_dags

        sync_dags()
        client = TestClient(create_app(), base_url="http://localhost:8080")
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        headers = {"Authorization": f"Bearer {token}"}
        now = datetime.now(UTC)
        with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as mongo:
            for count, days in ((args.ledger, args.days), (args.ledger // 10, args.days // 10 or 1)):
                started = time.perf_counter()
                seed(mongo.leadflow, count, days, now)
                seeded = time.perf_counter() - started
                week = mongo.leadflow.followup_deliveries.count_documents(
                    {"created_at": {"$gte": now - timedelta(days=8)}}
                )
                # The MongoDB part alone (the stand-in is a Python server: most of the figure).
                from leadflow_ui.ledger_stats import day_stats

                mongo_seconds = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    day_stats(mongo.leadflow, now, {})
                    mongo_seconds.append(time.perf_counter() - started)
                print(
                    f"{'ledger reads (MongoDB)':24s} ledger {count:>7,} docs: median"
                    f" {statistics.median(mongo_seconds):.3f} s, slowest {max(mongo_seconds):.3f} s",
                    flush=True,
                )
                for path in ("/leadflow/api/overview", "/leadflow/"):
                    seconds = timed(client, path, headers, args.repeat)
                    print(
                        f"{path:24s} ledger {count:>7,} docs over {days:>3} days ({week:,} in the shown 8 days;"
                        f" seeded in {seeded:.0f} s): median {statistics.median(seconds):.3f} s,"
                        f" slowest {max(seconds):.3f} s of {args.repeat}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
