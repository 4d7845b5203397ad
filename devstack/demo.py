"""`make demo`: run each DAG once end to end against fresh stand-ins, print what happened, exit.

No scheduler: each DAG runs through ``dag.test()`` in this process (the same task code the
scheduler would run), against a throw-away stack and Airflow home under .local/demo.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from devstack.airflow_home import REPO, airflow_env

STATE = REPO / ".local" / "demo"
shutil.rmtree(STATE, ignore_errors=True)
os.environ.update(airflow_env(STATE / "airflow"))  # before anything imports airflow


def summarise(stack) -> list[str]:
    import pymongo

    from devstack import clients

    lines = []
    for book in clients.spreadsheet_list(stack.control_url("sheets")):
        state = clients.spreadsheet_state(stack.control_url("sheets"), book["spreadsheetId"])
        tabs = ", ".join(
            f"{s['properties']['title']}: {max(len(s.get('rows', [])) - 1, 0)} rows" for s in state["sheets"]
        )
        lines.append(f"  sheet  {book['title']}  [{tabs}]")
    outbox = clients.outbox(stack.control_url("whatsapp"))
    kinds = Counter(m.get("type") for m in outbox)
    lines.append(f"  whatsapp outbox: {len(outbox)} messages {dict(kinds)}")
    sqs = stack.boto3_client("sqs")
    for name, url in (("queue", stack.queue_url), ("dead-letter queue", stack.dlq_url)):
        attrs = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        lines.append(
            f"  {name}: {attrs['ApproximateNumberOfMessages']} waiting, "
            f"{attrs['ApproximateNumberOfMessagesNotVisible']} in flight"
        )
    with pymongo.MongoClient(stack.mongo_uri) as client:
        states = Counter(d.get("state") for d in client.leadflow.followup_deliveries.find({}, {"state": 1}))
    lines.append(f"  follow-up ledger: {dict(states)}")
    return lines


def main() -> int:
    from devstack.airflow_home import prepare_home
    from devstack.airflow_settings import apply_settings, read_settings
    from devstack.events import queue_demo_events
    from devstack.run import demo_end, seed_demo
    from devstack.services import running_stack

    prepare_home(STATE / "airflow")
    with running_stack(STATE / "stack") as stack:
        print("seeded:", seed_demo(stack), flush=True)
        apply_settings(read_settings(stack=stack))
        print("queued follow-up events:", queue_demo_events(stack), flush=True)

        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
        if bag.import_errors:
            print("DAG import errors:", bag.import_errors, file=sys.stderr)
            return 1
        results = {}
        reports = bag.get_dag("interaction_reports")
        results["interaction_reports"] = reports.test(logical_date=demo_end()).state
        followups = bag.get_dag("whatsapp_followups")
        results["whatsapp_followups"] = followups.test().state
        print("\n== leadflow demo ==")
        for dag_id, state in results.items():
            print(f"  {dag_id}: {state}")
        print("\n".join(summarise(stack)))
        print(f"\n  stand-in data kept in {Path(stack.state_dir)}")
        return 0 if all(state == "success" for state in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
