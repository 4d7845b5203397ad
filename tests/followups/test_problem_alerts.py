"""Each dead letter and permanent failure is alerted once, even when no run summary counts it.

A try of ``process_messages`` killed after it dead-lettered (and deleted from SQS) some messages
leaves them in no summary (issue 24, ``make chaos`` seeds 3/4/5). The alert takes them from the
delivery ledger instead. The scenario reproduces the loss without killing anything: the ledger
holds a dead letter from an earlier try that the run's summary does not count. The hypothesis
test generates interleavings of problems, redrives, receipts, history and alert tries (some
killed before they publish, then retried) and checks, against a model kept here, that every
current problem is named by exactly one run's alert and nothing else is named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.airflow_settings import connection_json, read_settings
from leadflow.followups.tasks import alert_on_problems
from leadflow.messaging.alert_claims import STALE_CLAIM, claim_problems, mark_published
from leadflow.messaging.ledger import REOPENABLE_STATES, Ledger, State
from tests.followups.support import event, run_dag


def test_a_dead_letter_no_summary_counts_is_alerted_once(followups_dag, env) -> None:
    # What a try killed after dead-lettering leaves: the ledger's record (the DLQ copy too), no summary.
    ledger = Ledger(env.db.followup_deliveries)
    ledger.finish("sqs-message:m-broken", State.DEAD_LETTERED, sqs_message_id="m-broken",
                  reason="invalid_json: Expecting value")  # fmt: skip
    ledger.finish("evt-who", State.DEAD_LETTERED, sqs_message_id="m-who", event_id="evt-who",
                  reason="unknown_user: no such user")  # fmt: skip
    uid, _ = env.add_user("Kavya Menon")
    env.enqueue(json.dumps(event("inquiry_followup", uid, event_id="evt-good")))

    run = run_dag(followups_dag)  # the retry: it sends the good one and dead-letters nothing

    [alert] = env.alerts.read()
    assert alert["_subject"] == "[leadflow] whatsapp_followups: 2 dead-lettered, 0 failed"
    assert (alert["run"], alert["dead_lettered"], alert["failed"]) == (run.run_id, 2, 0)
    assert alert["dead_letter_reasons"] == {"invalid_json": 1, "unknown_user": 1}
    assert sorted(alert["event_ids"]) == ["evt-who", "sqs-message:m-broken"]

    # The next run does not name them again.
    env.enqueue(json.dumps(event("inquiry_followup", uid, event_id="evt-good-2")))
    run_dag(followups_dag)
    assert env.alerts.read() == []

    # A retry of the first run's alert task publishes what its run claimed, again.
    with pytest.MonkeyPatch.context() as patch:  # outside a task, Airflow reads these from the environment
        patch.setenv("AIRFLOW_VAR_LEADFLOW_ALERTS_SNS_TOPIC_ARN", env.stack.alerts_topic_arn)
        for conn in read_settings(stack=env.stack).connections:
            if conn["conn_id"] in ("aws_default", "mongo_default"):
                patch.setenv(f"AIRFLOW_CONN_{conn['conn_id'].upper()}", connection_json(conn))
        assert alert_on_problems({"received": 1, "sent": 1}, run.run_id)
    [again] = env.alerts.read()
    assert sorted(again["event_ids"]) == sorted(alert["event_ids"])
    assert again["dead_lettered"] == 2


KEYS = [f"evt-{n}" for n in range(5)]
OLD = timedelta(hours=30)  # past the claim window: history before the deploy

operations = st.lists(
    st.one_of(
        st.tuples(st.just("problem"), st.sampled_from(KEYS), st.sampled_from([State.DEAD_LETTERED, State.FAILED])),
        st.tuples(st.just("receipt_failed"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("history"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("delivered"), st.sampled_from(KEYS), st.none()),
        # An alert try: "publishes" (the run is over), "killed" after claiming (retried: the next
        # alert try is the same run's), "dies" after claiming (failed for good: the run is over).
        st.tuples(st.just("alert"), st.none(), st.sampled_from(["publishes", "killed", "dies"])),
        st.tuples(st.just("wait"), st.none(), st.none()),  # past the stale-claim time
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(ops=operations)
def test_every_current_problem_is_named_by_exactly_one_run(env, ops: list[tuple[str, Any, Any]]) -> None:
    collection = env.db.followup_deliveries
    collection.delete_many({})
    ledger = Ledger(collection)
    # The model: each key's generation (a new outcome is a new one) and whether it must be alerted.
    generation: dict[str, int] = defaultdict(int)
    must_alert: dict[tuple[str, int], bool] = {}
    named_by: dict[tuple[str, int], set[int]] = defaultdict(set)
    run = 0

    def new_outcome(key: str, alertable: bool) -> None:
        generation[key] += 1
        must_alert[(key, generation[key])] = alertable

    now = datetime.now(UTC)

    def alert_try(how: str) -> None:
        nonlocal run
        claimant = f"whatsapp_followups/run-{run}"
        claimed = claim_problems(collection, claimant, now=now)
        if how == "publishes":  # as alert_on_problems: publish, then say so
            assert claimed.dead_lettered == len(claimed.event_ids) >= claimed.failed
            for key in claimed.event_ids:
                named_by[(key, generation[key])].add(run)
            mark_published(collection, claimant, now=now)
        if how != "killed":
            run += 1

    for kind, key, arg in ops:
        doc = ledger.get(key) if key else None
        state = doc and doc.get("state")
        if kind == "problem" and state != State.SENT:
            if state in REOPENABLE_STATES:  # redriven: the event arrives again
                assert ledger.reopen(key, sqs_message_id="m-again")
            code = "131026" if arg is State.FAILED else None
            assert ledger.finish(key, arg, sqs_message_id="m", reason="unknown_user: x", error_code=code)[0]
            new_outcome(key, alertable=True)
        elif kind == "receipt_failed" and state in (None, State.SENT):  # the statuses DAG alerts these
            collection.update_one({"_id": key}, {"$set": {"state": "failed", "failed_async": True,
                                                          "updated_at": datetime.now(UTC)}}, upsert=True)  # fmt: skip
            new_outcome(key, alertable=False)
        elif kind == "history" and doc is None:
            collection.insert_one({"_id": key, "state": "dead_lettered", "reason": "unknown_user: x",
                                   "updated_at": datetime.now(UTC) - OLD})  # fmt: skip
            new_outcome(key, alertable=False)
        elif kind == "delivered" and doc is not None:
            collection.update_one({"_id": key}, {"$set": {"state": "sent", "updated_at": datetime.now(UTC)}})
            new_outcome(key, alertable=False)
        elif kind == "alert":
            alert_try(arg)
        elif kind == "wait":
            now += STALE_CLAIM + timedelta(minutes=1)
    now += STALE_CLAIM + timedelta(minutes=1)
    alert_try("publishes")  # a later run's alert, which publishes

    current = {(key, gen) for key, gen in generation.items()}
    for occurrence, alertable in must_alert.items():
        runs = named_by.get(occurrence, set())
        if alertable and occurrence in current:
            assert len(runs) == 1, (occurrence, runs)
        else:
            assert len(runs) <= int(alertable), (occurrence, runs)
    assert set(named_by) <= set(must_alert)
