"""Benchmark of the WhatsApp follow-ups: messages per second, concurrent vs serial, and duplicates.

    python -m bench.followups [--events 1000] [--serial-sample 50] [--concurrency 64] [--skip-dag]

Starts its own stand-in stack in a temporary folder, with the OpenAI stand-in answering in
500 ms and the WhatsApp stand-in in 100 ms (and enforcing Meta's 6 s pair rate limit, so a pacing
bug would show up as failed sends), seeds one user per event and measures:

1. the processing path: ``FollowupProcessor.process`` on one batch of ``--events`` messages
   received from the queue, (a) without a send-rate limit (the pipeline's capacity) and (b) with
   the limit at Meta's ceiling of 80 msg/s (what production can use);
2. the same path one message at a time (concurrency 1) on ``--serial-sample`` messages, in the
   same run, and the ratio;
3. end to end through the DAG: ``--events`` messages drained by consecutive runs of
   ``whatsapp_followups`` under ``dag.test()`` (sensor with its trigger run in-process, then the
   processing task), i.e. without a separate scheduler process, with the production batch size.

Every phase checks for duplicates: WhatsApp messages per event (from the outbox) must be exactly
one, and the ledger must say ``sent`` for every event. Each processing phase also prints the CPU
seconds every process used (the pipeline and each stand-in), since on a small machine the
stand-ins share the cores with the pipeline. The MongoDB stand-in runs standalone here (see
``devstack.services._commands``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId

from devstack import clients
from devstack.services import Stack, running_stack
from leadflow.mongo_indexes import ensure_indexes

OPENAI_LATENCY_S = 0.5
WHATSAPP_LATENCY_S = 0.1
TEMPLATES = {
    "site_visit_reminder": "site_visit_reminder_v1",
    "cost_sheet_followup": "cost_sheet_followup_v1",
    "inquiry_followup": "inquiry_followup_v1",
}
EVENT_TYPES = list(TEMPLATES)


@dataclass
class Phase:
    name: str
    messages: int
    seconds: float
    duplicates: int
    note: str = ""
    fallbacks: int = 0
    texts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the phase

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time so far of this process (the pipeline) and of each stand-in process."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {"pipeline": time.process_time()}
    for name, pid in stack.pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return used


def cpu_line(phase: Phase) -> str:
    per_message = phase.cpu.get("pipeline", 0.0) / max(phase.messages, 1) * 1000
    spent = ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(phase.cpu.items(), key=lambda kv: -kv[1]))
    total = sum(phase.cpu.values())
    cores = os.cpu_count() or 1
    return (
        f"    CPU s: {spent} (all {total:.1f} s of {phase.seconds * cores:.1f} s on {cores} cores); "
        f"pipeline {per_message:.1f} ms per message"
    )


# -- data -------------------------------------------------------------------------------------


class Seeder:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
        self.db = self.client.leadflow
        ensure_indexes(self.db)  # as in production (the interactions index serves the 24 h window)
        self.sqs = stack.boto3_client("sqs")
        self._next_number = 0

    def events(self, count: int, tag: str) -> list[dict[str, Any]]:
        """``count`` users (every other one wrote to us an hour ago) and one event for each."""
        now = datetime.now(UTC)
        users, interactions, events = [], [], []
        for i in range(count):
            self._next_number += 1
            user_id = ObjectId()
            digits = f"9{self._next_number:09d}"
            users.append({
                "_id": user_id, "name": f"Buyer {self._next_number}", "mobile": f"+91 {digits[:5]} {digits[5:]}",
                "preferred_configuration": ["2BHK", "3BHK"][i % 2], "inquiry_type": "site_visit",
            })  # fmt: skip
            if i % 2:
                interactions.append(
                    {"user_id": user_id, "session_id": f"s{i}", "role": "user", "text": "hi",
                     "timestamp": now - timedelta(hours=1)}
                )  # fmt: skip
            event_type = EVENT_TYPES[i % 3]
            event: dict[str, Any] = {
                "event_id": f"{tag}-{i:05d}-{uuid.uuid4().hex[:6]}",
                "event_type": event_type,
                "user_id": str(user_id),
            }
            if event_type == "site_visit_reminder":
                event["scheduled_at"] = (now + timedelta(days=2)).replace(microsecond=0).isoformat()
            if event_type == "cost_sheet_followup" and i % 2:
                event["media"] = {"type": "image", "url": f"https://cdn.example.com/cs/{i}.png"}
            events.append(event)
        self.db.users.insert_many(users)
        if interactions:
            self.db.interactions.insert_many(interactions)
        return events

    def enqueue(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 10):
            entries = [{"Id": str(n), "MessageBody": json.dumps(e)} for n, e in enumerate(events[start : start + 10])]
            self.sqs.send_message_batch(QueueUrl=self.stack.queue_url, Entries=entries)

    def receive_all(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=1200,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])  # fmt: skip
            if not batch:
                return messages
            messages += batch

    def queue_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def check(self, events: list[dict[str, Any]], outbox: list[dict[str, Any]]) -> int:
        """Duplicates among ``events``; raises if any event was not sent exactly as recorded."""
        ids = [e["event_id"] for e in events]
        # In chunks: the MongoDB stand-in's cost of one $in grows faster than its length.
        chunks = [ids[start : start + 500] for start in range(0, len(ids), 500)]
        ledger = {d["_id"]: d for chunk in chunks for d in self.db.followup_deliveries.find({"_id": {"$in": chunk}})}
        not_sent = [i for i in ids if ledger.get(i, {}).get("state") != "sent"]
        if not_sent:
            raise SystemExit(f"{len(not_sent)} event(s) not sent, e.g. {not_sent[:3]}")
        per_wamid = Counter(m["wamid"] for m in outbox)
        wamids = {ledger[i]["wamid"] for i in ids}
        per_recipient = Counter(m["to"] for m in outbox if m["wamid"] in wamids)
        missing = wamids - set(per_wamid)
        if missing:
            raise SystemExit(f"{len(missing)} ledger wamid(s) not in the WhatsApp outbox")
        return sum(n - 1 for n in per_recipient.values())


# -- the processing path ------------------------------------------------------------------------


def build_processor(
    stack: Stack, *, concurrency: int, send_rate: float, queue_url: str | None = None, dlq_url: str | None = None
) -> Any:
    """The processor wired by hand (no Airflow), as ``processor.build_processor`` does in a task;
    on the follow-ups' queue pair unless told another (``bench.reminders``)."""
    import boto3
    from botocore.config import Config
    from openai import OpenAI

    from leadflow.followups.personalise import Personaliser
    from leadflow.followups.processor import FollowupProcessor
    from leadflow.followups.settings import ProcessorSettings
    from leadflow.messaging.templates import TemplateConfig
    from leadflow.messaging.whatsapp import WhatsAppClient, WhatsAppConfig

    pool = concurrency + 4
    sqs = boto3.client(
        "sqs", endpoint_url=stack.sqs_url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(max_pool_connections=pool),
    )  # fmt: skip
    openai = OpenAI(base_url=stack.openai_url, api_key="sk-bench", max_retries=2, timeout=20)
    whatsapp = WhatsAppClient(WhatsAppConfig(stack.whatsapp_url, "bench-token", "100000000000001"), pool_size=pool)
    settings = ProcessorSettings(
        queue_url=queue_url or stack.queue_url,
        dlq_url=dlq_url or stack.dlq_url,
        templates=TemplateConfig.parse({"language": "en", "templates": TEMPLATES}),
        concurrency=concurrency,
        send_rate_per_second=send_rate,
    )
    db = pymongo.MongoClient(stack.mongo_uri, tz_aware=True, maxPoolSize=pool).leadflow
    return FollowupProcessor(
        db=db, sqs=sqs, personaliser=Personaliser(openai, "gpt-4o-mini"), whatsapp=whatsapp, settings=settings
    )


def processing_phase(seeder: Seeder, name: str, count: int, *, concurrency: int, send_rate: float) -> Phase:
    events = seeder.events(count, name.split()[0])
    seeder.enqueue(events)
    ids = {e["event_id"] for e in events}
    # On a loaded machine a phase can outlast the 20 min visibility of an earlier phase's receive:
    # its few undeleted (already sent) messages come back. They are not this phase's work.
    messages = [m for m in seeder.receive_all() if json.loads(m["Body"]).get("event_id") in ids]
    assert len(messages) == count, (len(messages), count)
    processor = build_processor(seeder.stack, concurrency=concurrency, send_rate=send_rate)
    cpu_before = cpu_seconds(seeder.stack)
    started = time.perf_counter()
    summary = processor.process(messages)
    seconds = time.perf_counter() - started
    cpu_after = cpu_seconds(seeder.stack)
    if summary.sent != count:
        raise SystemExit(f"{name}: sent {summary.sent} of {count}: {summary.as_dict()}")
    duplicates = seeder.check(events, clients.outbox(seeder.stack.control_url("whatsapp")))
    limit = f"send limit {send_rate:g}/s" if send_rate > 0 else "no send limit"
    phase = Phase(name, count, seconds, duplicates, f"concurrency {concurrency}, {limit}",
                  summary.fallbacks, summary.texts_generated,
                  {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after})  # fmt: skip
    print(f"  ({name}: {phase.rate:.1f} msg/s, duplicates {duplicates}, fallbacks {summary.fallbacks})", flush=True)
    return phase


# -- end to end through the DAG -----------------------------------------------------------------


def dag_phase(seeder: Seeder, home: Path, count: int, *, concurrency: int, send_rate: float) -> Phase:
    from devstack.airflow_home import prepare_home
    from devstack.airflow_settings import apply_settings, read_settings

    prepare_home(home)
    from airflow.dag_processing.dagbag import DagBag

    settings = read_settings(stack=seeder.stack)
    settings.variables["leadflow_followup_concurrency"] = str(concurrency)
    settings.variables["leadflow_followup_send_rate_per_second"] = str(send_rate)
    apply_settings(settings)
    dag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags" / "whatsapp_followups.py")).get_dag(
        "whatsapp_followups"
    )
    # Warm-up run on an empty queue (one-off costs: DAG sync, the in-process API server).
    dag.test(run_conf={"max_wait_seconds": 1})

    events = seeder.events(count, "dag")
    seeder.enqueue(events)
    runs = 0
    spent: Counter[str] = Counter()
    cpu_before = cpu_seconds(seeder.stack)
    started = time.perf_counter()
    while seeder.queue_depth() and runs < 4 * (count // 200 + 2):
        run = dag.test(run_conf={"max_wait_seconds": 5})
        runs += 1
        if run.state != "success":
            raise SystemExit(f"DAG run {run.run_id} ended {run.state}")
        spent.update(task_seconds(run))
    seconds = time.perf_counter() - started
    cpu_after = cpu_seconds(seeder.stack)
    duplicates = seeder.check(events, clients.outbox(seeder.stack.control_url("whatsapp")))
    note = (
        f"{runs} runs under dag.test(), no separate scheduler; per run <= 200 messages; time in "
        f"receive_messages {spent['receive_messages']:.1f} s, process_messages {spent['process_messages']:.1f} s, "
        f"the rest {seconds - sum(spent.values()):.1f} s; concurrency {concurrency}, send limit {send_rate:g}/s"
    )
    cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
    return Phase("DAG end to end", count, seconds, duplicates, note, cpu=cpu)


def task_seconds(run: Any) -> dict[str, float]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
        return {
            ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in tis if ti.start_date and ti.end_date
        }


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--serial-sample", type=int, default=50)
    from leadflow.followups.budget import DEFAULT_CONCURRENCY

    # What production runs with when the Variable is unset (also its cap at Meta's send rates).
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--skip-dag", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-followups-"))
    home = tmp / "airflow"
    # Airflow reads its configuration on first import: set it up before anything imports it.
    from devstack.airflow_home import airflow_env

    os.environ.update(airflow_env(home))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR"] = "false"

    with running_stack(tmp / "stack", mongo_standalone=True) as stack:
        whatsapp, openai = stack.control_url("whatsapp"), stack.control_url("openai")
        clients.set_settings(openai, latency=OPENAI_LATENCY_S)
        clients.set_settings(whatsapp, latency=WHATSAPP_LATENCY_S, pair_rate_limit_seconds=6.0)
        seeder = Seeder(stack)
        print(
            f"stand-ins: OpenAI {OPENAI_LATENCY_S * 1000:.0f} ms, WhatsApp {WHATSAPP_LATENCY_S * 1000:.0f} ms "
            f"per call; {args.events} events per phase",
            flush=True,
        )
        phases = [
            processing_phase(seeder, "capacity (processing path)", args.events,
                             concurrency=args.concurrency, send_rate=0),
            processing_phase(seeder, "ceiling (processing path)", args.events,
                             concurrency=args.concurrency, send_rate=80),
            processing_phase(seeder, "serial (processing path)", args.serial_sample, concurrency=1, send_rate=0),
        ]  # fmt: skip
        for phase in phases:
            print(f"  {phase.name:<30} {phase.messages:>5} msgs in {phase.seconds:7.2f} s = "
                  f"{phase.rate:7.1f} msg/s  duplicates {phase.duplicates}  fallbacks {phase.fallbacks}/{phase.texts}  "
                  f"({phase.note})", flush=True)  # fmt: skip
            print(cpu_line(phase), flush=True)
        if not args.skip_dag:
            phase = dag_phase(seeder, home, args.events, concurrency=args.concurrency, send_rate=80)
            phases.append(phase)
            print(f"  {phase.name:<30} {phase.messages:>5} msgs in {phase.seconds:7.2f} s = "
                  f"{phase.rate:7.1f} msg/s  duplicates {phase.duplicates}  ({phase.note})", flush=True)  # fmt: skip
            print(cpu_line(phase), flush=True)
            print(f"  end to end / processing path at the 80 msg/s ceiling: {phase.rate / phases[1].rate:.2f}",
                  flush=True)  # fmt: skip
        capacity, ceiling, serial = phases[0], phases[1], phases[2]
        sends = [c for c in clients.calls(whatsapp) if c["path"].endswith("/messages")]
        rejected = Counter(c["status"] for c in sends if c["status"] != 200)
        print()
        print(f"concurrent / serial: {capacity.rate / serial.rate:.1f}x without a send limit, "
              f"{ceiling.rate / serial.rate:.1f}x at the 80 msg/s ceiling")  # fmt: skip
        print(f"target >= 80 msg/s on the processing path: {'met' if capacity.rate >= 80 else 'NOT met'} "
              f"(capacity {capacity.rate:.0f} msg/s; WhatsApp's 80 msg/s is the ceiling)")  # fmt: skip
        print(f"duplicates: {sum(p.duplicates for p in phases)}; WhatsApp sends rejected: {dict(rejected) or 'none'}")
        texts = sum(p.texts for p in phases)
        fallbacks = sum(p.fallbacks for p in phases)
        print(f"fallback rate on the processing path: {fallbacks}/{texts} = {fallbacks / max(texts, 1):.1%} "
              "(goal: 0 when the model answers well)")  # fmt: skip


if __name__ == "__main__":
    main()
