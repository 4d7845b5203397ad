"""The deadline invariant: every site-visit reminder reaches the buyer before the visit, or is
counted and alerted (late / expired), never silently dropped, never sent twice; an account-level
outage of any length loses nothing (no message reaches a DLQ for it).

Hypothesis generates bursts of nudges and reminders with their due times, outages of up to
three hours (longer than SQS's maxReceiveCount x the visibility timeout, 5 x 15 min), and the
two consumers' runs at various intervals and batch sizes. Time is virtual: SQS is the stack's
SQS stand-in (``devstack.sqs_server``: moto with the strict indexed queues of
``devstack.sqs_index``) served in this process on a clock the test moves, so delays, visibility
timeouts, receive counts and the redrive to the DLQ behave as in SQS over hours of simulated
time; WhatsApp, OpenAI, MongoDB and SNS are the stack's stand-ins. The expected outcome of each
reminder is computed here from the schedule alone (when it was due, when the visit is, when a
run that could send it happened), and compared with the WhatsApp outbox and the alerts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import requests
from bson import ObjectId
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from devstack import clients, sqs_server
from devstack.airflow_settings import connection_json, read_settings
from devstack.services import free_port
from leadflow.alerts import FailureAlert
from leadflow.followups.personalise import Personaliser
from leadflow.followups.processor import FollowupProcessor
from leadflow.followups.settings import ProcessorSettings
from leadflow.followups.tasks import _account_level_error, alert_on_problems
from leadflow.messaging.templates import TemplateConfig
from leadflow.messaging.whatsapp import RetryPolicy, WhatsAppClient, WhatsAppConfig
from tests.followups.support import TEMPLATES, Env

START = datetime(2031, 3, 4, 3, 30, tzinfo=UTC)  # 09:00 IST
LEAD = 15 * 60  # a reminder is due 15 min before the visit
PLAN_AHEAD = 5 * 60  # the planner enqueues it up to 5 min before it is due (DelaySeconds)
LATE_AFTER = 120  # the promise (README, docs/followups.md): more than 2 min after its deadline is "late", and alerted
MAX_RECEIVES = 5  # deploy/sqs-queues.json: maxReceiveCount
RECEIVE_VISIBILITY = 1200  # dag_settings.VISIBILITY_TIMEOUT_S
OUTAGE_CODE = 190  # access token expired: account-level, every send fails until it is renewed


class VirtualClock:
    def __init__(self) -> None:
        self.t = START.timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


@dataclass
class VirtualSqs:
    """The SQS stand-in served in this process, on ``clock``."""

    clock: VirtualClock
    endpoint: str

    def client(self) -> Any:
        return boto3.client(
            "sqs", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def queue_pair(self, sqs: Any, name: str) -> tuple[str, str]:
        dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(MAX_RECEIVES)})
        queue = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "900", "RedrivePolicy": policy})
        return queue["QueueUrl"], dlq


@pytest.fixture(scope="module")
def virtual_sqs() -> Iterator[VirtualSqs]:
    from moto.server import ThreadedMotoServer

    clock = VirtualClock()
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per SQS call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    with pytest.MonkeyPatch.context() as patch:
        # What `python -m devstack.sqs_server` installs in the stack's process, put back afterwards.
        sqs_server.install(assign=patch.setattr)
        sqs_server.use_clock(lambda: clock.t, assign=patch.setattr)
        server.start()
        try:
            yield VirtualSqs(clock, f"http://127.0.0.1:{port}")
        finally:
            server.stop()


def test_the_virtual_sqs_is_the_strict_stand_in_on_the_virtual_clock(virtual_sqs: VirtualSqs) -> None:
    """Delays and visibility timeouts end when the test's clock says so, and SQS's rules that moto
    alone does not apply hold (a visibility change on a message no longer in flight is refused)."""
    virtual_sqs.clock.t = START.timestamp()
    virtual_sqs.reset()
    sqs = virtual_sqs.client()
    queue, _ = virtual_sqs.queue_pair(sqs, "probe")
    sqs.send_message(QueueUrl=queue, MessageBody="{}", DelaySeconds=600)
    assert _receive(sqs, queue, 10) == []
    virtual_sqs.clock.t += 600
    [message] = _receive(sqs, queue, 10)
    assert _receive(sqs, queue, 10) == []  # in flight for RECEIVE_VISIBILITY
    virtual_sqs.clock.t += RECEIVE_VISIBILITY
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=60)
    assert len(_receive(sqs, queue, 10)) == 1


# --------------------------------------------------------------------------------------------
# The scenario


@dataclass(frozen=True)
class Scenario:
    nudges: int
    visits: list[int]  # seconds after START
    outages: list[tuple[int, int]]  # (start, length) in seconds after START
    step: int  # seconds between the consumers' runs
    reminder_batch: int
    nudge_batch: int
    concurrency: int


scenarios = st.builds(
    Scenario,
    nudges=st.integers(0, 8),
    visits=st.lists(st.integers(0, 2 * 3600), min_size=1, max_size=6),
    # 9,000 s: longer than maxReceiveCount x the visibility timeout (5 x 900 s), twice over.
    outages=st.lists(st.tuples(st.integers(0, 5400), st.sampled_from([300, 1800, 5400, 9000])), max_size=2),
    step=st.sampled_from([30, 120, 600]),
    reminder_batch=st.integers(1, 12),
    nudge_batch=st.integers(1, 12),
    concurrency=st.integers(1, 4),
)


@dataclass
class Reminder:
    event_id: str
    visit: float  # epoch seconds
    due: float  # what the producer says (due_at)
    enqueue_at: float
    body: dict[str, Any]


@dataclass
class Record:
    sent_at: dict[str, list[float]] = field(default_factory=dict)  # event id -> virtual send times
    late_ids: set[str] = field(default_factory=set)
    expired_ids: set[str] = field(default_factory=set)
    alerted_late: set[str] = field(default_factory=set)
    alerted_expired: set[str] = field(default_factory=set)
    outbox_seen: int = 0


def _user(env: Env, n: int, visit: datetime | None) -> str:
    doc: dict[str, Any] = {"_id": ObjectId(), "name": f"Buyer {n}", "mobile": f"+91 98{n:08d}", "ranking": "High"}
    if visit is not None:
        doc["site_visit"] = {"scheduled_at": visit, "status": "scheduled"}
    env.db.users.insert_one(doc)
    return str(doc["_id"])


def _processor(
    env: Env, sqs: Any, clock: VirtualClock, queue: str, dlq: str, concurrency: int, outage_delay: int
) -> FollowupProcessor:
    openai = OpenAI(base_url=env.stack.openai_url, api_key="sk-test", max_retries=0, timeout=5)
    whatsapp = WhatsAppClient(
        WhatsAppConfig(env.stack.whatsapp_url, "local-whatsapp-token", "100000000000001", timeout=10),
        retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.05, pair_wait=0.05),
    )
    settings = ProcessorSettings(
        queue_url=queue,
        dlq_url=dlq,
        templates=TemplateConfig.parse({"language": "en", "templates": TEMPLATES}),
        concurrency=concurrency,
        send_rate_per_second=0,
        redelivery_delay_seconds=60,
        outage_requeue_delay_seconds=outage_delay,
    )
    return FollowupProcessor(
        db=env.db, sqs=sqs, personaliser=Personaliser(openai, "gpt-4o-mini"), whatsapp=whatsapp,
        settings=settings, now=clock.now,
    )  # fmt: skip


def _receive(sqs: Any, queue: str, limit: int) -> list[dict[str, Any]]:
    batch: list[dict[str, Any]] = []
    while len(batch) < limit:
        got = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=min(10, limit - len(batch)), WaitTimeSeconds=0,
            VisibilityTimeout=RECEIVE_VISIBILITY,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        ).get("Messages", [])  # fmt: skip
        if not got:
            break
        batch += got
    return batch


def _collect_outbox(env: Env, record: Record, at: float) -> None:
    """What WhatsApp accepted since the last look was sent at virtual time ``at``."""
    outbox = clients.outbox(env.whatsapp)
    for message in outbox[record.outbox_seen :]:
        record.sent_at.setdefault(message["biz_opaque_callback_data"], []).append(at)
    record.outbox_seen = len(outbox)


def _depth(sqs: Any, url: str) -> int:
    names = [f"ApproximateNumberOfMessages{kind}" for kind in ("", "NotVisible", "Delayed")]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)


def _set_account(env: Env, record: Record, clock: VirtualClock, down: bool, was_down: bool) -> None:
    """WhatsApp answers every send with an account-level error while ``down``."""
    if down and not was_down:
        clients.inject_faults(env.whatsapp, [{"count": 100_000, "error_code": OUTAGE_CODE}])
    elif was_down and not down:
        _collect_outbox(env, record, clock.t)
        clients.reset(env.whatsapp)  # the fix; it forgets the outbox too, which the record holds
        record.outbox_seen = 0


def _run(env: Env, processor: FollowupProcessor, sqs: Any, queue: str, batch: int, record: Record, n: int) -> bool:
    messages = _receive(sqs, queue, batch)
    if not messages:
        return False
    summary = processor.process(messages).as_dict()
    record.late_ids |= set(summary["late_event_ids"])
    record.expired_ids |= set(summary["expired_event_ids"])
    if not summary["late_event_ids"] and not summary["expired_event_ids"]:
        return True  # (other alerts, e.g. the outage's own, are not what this test is about)
    if summary["account_error_code"] is None:
        alert_on_problems(summary, f"run-{n}")
    else:  # the task fails, and its failure alert is the run's one alert
        ti = SimpleNamespace(dag_id="whatsapp_reminders", task_id="process_messages", run_id=f"run-{n}",
                             try_number=1, log_url="")  # fmt: skip
        FailureAlert().notify({"ti": ti, "exception": _account_level_error(summary["account_error_code"], summary)})
    for alert in env.alerts.read():
        record.alerted_late |= set(alert.get("late_event_ids") or [])
        record.alerted_expired |= set(alert.get("expired_event_ids") or [])
    return True


# No shrinking: a failing example is printed as generated (shrinking re-runs hours of simulated time).
@settings(max_examples=2, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(scenario=scenarios)
# A 2.5-hour outage over every visit (each reminder expires; the nudges outlive 10 receive cycles),
# and a 90-minute one that ends before the last visits (those go out once it is fixed).
@example(Scenario(nudges=6, visits=[600, 2400, 4000, 7000], outages=[(300, 9000)], step=120,
                  reminder_batch=3, nudge_batch=4, concurrency=2))  # fmt: skip
@example(Scenario(nudges=4, visits=[1200, 6500, 7200], outages=[(0, 5400)], step=60,
                  reminder_batch=1, nudge_batch=2, concurrency=1))  # fmt: skip
# An outage that ends between a reminder's due time and its visit: it goes out, late, and alerts.
@example(Scenario(nudges=2, visits=[2400], outages=[(0, 1800)], step=60, reminder_batch=2, nudge_batch=2,
                  concurrency=1))  # fmt: skip
def test_every_reminder_is_on_time_or_counted_and_alerted_and_an_outage_loses_nothing(
    env: Env, virtual_sqs: VirtualSqs, scenario: Scenario
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        # Outside a task the alert reads its topic and connection from the environment.
        patch.setenv("AIRFLOW_VAR_LEADFLOW_ALERTS_SNS_TOPIC_ARN", env.stack.alerts_topic_arn)
        for conn in read_settings(stack=env.stack).connections:
            if conn["conn_id"] in ("aws_default", "mongo_default"):  # the alert reads the ledger too
                patch.setenv(f"AIRFLOW_CONN_{conn['conn_id'].upper()}", connection_json(conn))
        _simulate_and_check(env, virtual_sqs, scenario)


def _simulate_and_check(env: Env, virtual_sqs: VirtualSqs, scenario: Scenario) -> None:
    clock, sqs = virtual_sqs.clock, virtual_sqs.client()
    clock.t = START.timestamp()
    virtual_sqs.reset()
    clients.reset(env.whatsapp)
    env.db.users.delete_many({})
    env.db.followup_deliveries.delete_many({})
    env.alerts.read()
    nudge_queue, nudge_dlq = virtual_sqs.queue_pair(sqs, "nudges")
    reminder_queue, reminder_dlq = virtual_sqs.queue_pair(sqs, "reminders")
    start = START.timestamp()

    # The producers: a burst of nudges at the start, each reminder 5 min before it is due.
    for n in range(scenario.nudges):
        body = {"event_id": f"nudge-{n}", "event_type": "inquiry_followup", "user_id": _user(env, n, None)}
        sqs.send_message(QueueUrl=nudge_queue, MessageBody=json.dumps(body))
    reminders: list[Reminder] = []
    for n, offset in enumerate(scenario.visits, start=1000):
        visit = start + offset
        due = max(visit - LEAD, start)
        uid = _user(env, n, datetime.fromtimestamp(visit, UTC))
        body = {
            "event_id": f"reminder-{n}", "event_type": "site_visit_reminder", "user_id": uid,
            "scheduled_at": datetime.fromtimestamp(visit, UTC).isoformat(),
            "due_at": datetime.fromtimestamp(due, UTC).isoformat(),
        }  # fmt: skip
        reminders.append(Reminder(body["event_id"], visit, due, max(start, due - PLAN_AHEAD), body))

    # The two consumers' settings as load_settings() gives them (dag_settings).
    nudges = _processor(env, sqs, clock, nudge_queue, nudge_dlq, scenario.concurrency, 900)
    reminder_consumer = _processor(env, sqs, clock, reminder_queue, reminder_dlq, scenario.concurrency, 300)
    record = Record()
    pending = sorted(reminders, key=lambda r: r.enqueue_at)
    last_outage = max((s + length for s, length in scenario.outages), default=0)
    horizon = start + max(max(scenario.visits), last_outage) + 3600  # then an hour to drain
    runs, was_down = 0, False
    while clock.t <= horizon:
        while pending and pending[0].enqueue_at <= clock.t:
            r = pending.pop(0)
            delay = int(max(0, r.due - clock.t))
            sqs.send_message(QueueUrl=reminder_queue, MessageBody=json.dumps(r.body), DelaySeconds=delay)
        down = any(s <= clock.t - start < s + length for s, length in scenario.outages)
        _set_account(env, record, clock, down, was_down)
        was_down = down
        busy = False
        for processor, queue, batch in (
            (reminder_consumer, reminder_queue, scenario.reminder_batch),
            (nudges, nudge_queue, scenario.nudge_batch),
        ):
            runs += 1
            busy |= _run(env, processor, sqs, queue, batch, record, runs)
        if busy:
            _collect_outbox(env, record, clock.t)
        # Idle consumers poll less often here (real ones long-poll all the time), so that hours of
        # simulated time stay quick; a reminder whose whole window is skipped must then be counted.
        clock.t += scenario.step if busy else min(4 * scenario.step, 600)

    _set_account(env, record, clock, False, was_down)
    # Nothing was dead-lettered, however long the outage; everything left the queues.
    for url in (nudge_queue, reminder_queue, nudge_dlq, reminder_dlq):
        assert _depth(sqs, url) == 0, (url, scenario)
    # Every nudge went out, once.
    for n in range(scenario.nudges):
        assert len(record.sent_at.get(f"nudge-{n}", [])) == 1, (n, scenario)

    ledger = {doc["_id"]: doc for doc in env.db.followup_deliveries.find()}
    for r in reminders:
        sends = record.sent_at.get(r.event_id, [])
        assert len(sends) <= 1, (r.event_id, sends)  # never twice
        deadline = min(r.due, r.visit)
        assert ledger[r.event_id]["deadline_at"] == datetime.fromtimestamp(deadline, UTC)
        if sends:
            [sent] = sends
            assert sent < r.visit, (r.event_id, "sent after the visit started")
            late = sent - deadline > LATE_AFTER
            assert (r.event_id in record.late_ids) == late, (r.event_id, sent - deadline)
            assert (r.event_id in record.alerted_late) == late
            assert ledger[r.event_id].get("late_seconds", 0) == pytest.approx(max(0.0, sent - deadline), abs=1e-3)
        else:
            # Not sent: only because its visit had started when a run got to it; counted, alerted.
            assert r.event_id in record.expired_ids, (r.event_id, scenario)
            assert r.event_id in record.alerted_expired
            assert (ledger[r.event_id]["state"], ledger[r.event_id]["reason"]) == ("skipped", "expired")
    assert not record.expired_ids - {r.event_id for r in reminders if not record.sent_at.get(r.event_id)}
    assert Counter(len(v) for v in record.sent_at.values()) <= Counter({1: len(record.sent_at)})
