"""Start, health-check and stop the local stand-in services that replace the cloud.

Every stand-in is a real network server on 127.0.0.1, reached by the real client library
(boto3, pymongo, googleapiclient, openai, requests), so the production code path runs unchanged
and only connection endpoints differ. ``make run``, ``make demo`` and the tests all start the
stack through :func:`start_stack`, which writes the endpoints to ``stack.json`` in the state
folder so other processes (the Airflow components, ``make sheets``) find them.

    python -m devstack.services up --state-dir .local      # foreground; Ctrl-C stops it all
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from leadflow.config import FOLLOWUPS_DLQ, FOLLOWUPS_QUEUE, REMINDERS_DLQ, REMINDERS_QUEUE
from leadflow.statuses.dag_settings import STATUSES_DLQ, STATUSES_QUEUE

HOST = "127.0.0.1"
AWS_REGION = "us-east-1"
ALERTS_TOPIC = "leadflow-alerts"
# The ports airflow_settings.yaml names; a busy one is swapped for a free one and the
# settings loader rewrites the connection to match (see devstack.airflow_settings).
DEFAULT_PORTS = {"sqs": 5055, "mongo": 27018, "sheets": 8091, "openai": 8092, "whatsapp": 8093}
STARTUP_TIMEOUT_S = 60.0
# The Meta app secret the WhatsApp stand-in signs receipts with; airflow_settings.yaml gives the
# same value to whatsapp_default's extra app_secret (tests/statuses checks they agree).
WHATSAPP_APP_SECRET = "local-whatsapp-app-secret"  # noqa: S105 - a local stand-in value


@dataclass
class Stack:
    """Endpoints of a running stand-in stack (what stack.json holds)."""

    state_dir: str
    ports: dict[str, int]
    queue_url: str = ""
    dlq_url: str = ""
    alerts_topic_arn: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    statuses_queue_url: str = ""
    statuses_dlq_url: str = ""
    reminders_queue_url: str = ""
    reminders_dlq_url: str = ""

    @property
    def sqs_url(self) -> str:
        return f"http://{HOST}:{self.ports['sqs']}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://{HOST}:{self.ports['mongo']}"

    @property
    def sheets_url(self) -> str:
        return f"http://{HOST}:{self.ports['sheets']}/"

    @property
    def openai_url(self) -> str:
        return f"http://{HOST}:{self.ports['openai']}/v1"

    @property
    def whatsapp_url(self) -> str:
        return f"http://{HOST}:{self.ports['whatsapp']}"

    def control_url(self, service: str) -> str:
        return f"http://{HOST}:{self.ports[service]}"

    def save(self) -> None:
        path = Path(self.state_dir) / "stack.json"
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: str | Path) -> Stack:
        return cls(**json.loads((Path(state_dir) / "stack.json").read_text()))

    def boto3_client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.sqs_url,
            region_name=AWS_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def choose_ports(prefer_defaults: bool) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        ports[name] = default if prefer_defaults and port_is_free(default) else free_port()
    return ports


def _commands(ports: dict[str, int], state: Path, *, mongo_standalone: bool = False) -> dict[str, list[str]]:
    py = sys.executable
    # The Mongo stand-in advertises a one-node replica set by default (as Atlas is one) and keeps
    # an oplog whose per-write cost grows with its length (mongod's capped oplog does not): about
    # 390 -> 115 writes/s over 6,000 writes here. Benchmarks that write thousands of documents run
    # it standalone (steady ~500 writes/s); pymongo then skips retryable writes, which no
    # benchmark exercises.
    standalone = ["--standalone"] if mongo_standalone else []
    return {
        "sqs": [py, "-m", "devstack.sqs_server", "-H", HOST, "-p", str(ports["sqs"])],
        "mongo": [
            py, "-m", "secantus", "--host", HOST, "--port", str(ports["mongo"]),
            "--storage-path", str(state / "mongo"), "--log-level", "WARNING", *standalone,
        ],
        "sheets": [
            py, "-m", "devstack.sheets_server", "--host", HOST, "--port", str(ports["sheets"]),
            "--data-dir", str(state / "sheets"),
        ],
        "openai": [
            py, "-m", "devstack.openai_server", "--host", HOST, "--port", str(ports["openai"]),
            "--data-dir", str(state / "openai"),
        ],
        "whatsapp": [
            py, "-m", "devstack.whatsapp_server", "--host", HOST, "--port", str(ports["whatsapp"]),
            "--data-dir", str(state / "whatsapp"),
        ],
    }  # fmt: skip


def _healthy(name: str, stack: Stack, pid: int | None = None) -> bool:
    """Whether the stand-in answers; for the HTTP stand-ins, also that it is process ``pid``
    (another stack's server on the same port must not pass for ours)."""
    try:
        if name == "mongo":
            import pymongo

            with pymongo.MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
            return True
        if name == "sqs":
            return requests.get(f"{stack.sqs_url}/moto-api/", timeout=1).ok
        answer = requests.get(f"{stack.control_url(name)}/_control/health", timeout=1)
        return answer.ok and (pid is None or answer.json().get("pid") == pid)
    except Exception:  # noqa: BLE001 - any failure just means "not up yet"
        return False


def _create_aws_resources(stack: Stack) -> None:
    """The three queue pairs and the alerts topic, as deploy/sqs-queues.json has them."""
    # Each queue's visibility timeout is longer than the worst-case processing of one of its
    # batches, so a message being worked on is not handed to the next run (see the dag_settings
    # of leadflow.followups and leadflow.statuses).
    stack.queue_url, stack.dlq_url = _create_queue_pair(stack, FOLLOWUPS_QUEUE, FOLLOWUPS_DLQ, visibility_s=900)
    stack.reminders_queue_url, stack.reminders_dlq_url = _create_queue_pair(
        stack, REMINDERS_QUEUE, REMINDERS_DLQ, visibility_s=900
    )
    stack.statuses_queue_url, stack.statuses_dlq_url = _create_queue_pair(
        stack, STATUSES_QUEUE, STATUSES_DLQ, visibility_s=600
    )
    stack.alerts_topic_arn = stack.boto3_client("sns").create_topic(Name=ALERTS_TOPIC)["TopicArn"]


def _create_queue_pair(stack: Stack, queue: str, dlq: str, *, visibility_s: int) -> tuple[str, str]:
    """A queue and its DLQ (redrive after 5 receives); (queue URL, DLQ URL)."""
    sqs = stack.boto3_client("sqs")
    dlq_url = sqs.create_queue(QueueName=dlq)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "VisibilityTimeout": str(visibility_s),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    return queue_url, dlq_url


def wire_whatsapp_webhook(stack: Stack) -> None:
    """Point the WhatsApp stand-in's receipts at the statuses queue, signed with the app secret."""
    response = requests.post(
        f"{stack.control_url('whatsapp')}/_control/webhook",
        json={
            "queue_url": stack.statuses_queue_url,
            "app_secret": WHATSAPP_APP_SECRET,
            "sqs_endpoint": stack.sqs_url,
            "region": AWS_REGION,
        },
        timeout=10,
    )
    response.raise_for_status()


def recreate_queues(stack: Stack) -> None:
    """Empty every queue, in-flight messages included (SQS allows one purge a minute)."""
    sqs = stack.boto3_client("sqs")
    def all_urls() -> tuple[str, ...]:
        return (
            stack.queue_url, stack.dlq_url, stack.reminders_queue_url, stack.reminders_dlq_url,
            stack.statuses_queue_url, stack.statuses_dlq_url,
        )  # fmt: skip

    urls = all_urls()
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    _create_aws_resources(stack)
    new = all_urls()
    if new != urls:
        raise RuntimeError(f"queue URLs changed on re-creation: {urls} → {new}")


def start_stack(state_dir: str | Path, *, prefer_default_ports: bool = False, mongo_standalone: bool = False) -> Stack:
    """Start every stand-in, wait until each answers, create the queues, write stack.json."""
    state = Path(state_dir).resolve()
    for sub in ("mongo", "sheets", "openai", "whatsapp", "logs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    # Stacks on one machine (pytest-xdist workers, a bench beside `make run`) start one at a
    # time: a port is free from choose_ports() until its server binds it, and another stack
    # choosing meanwhile could pick the same one and then talk to the wrong server.
    with _startup_lock():
        return _start_stack(state, prefer_default_ports=prefer_default_ports, mongo_standalone=mongo_standalone)


@contextlib.contextmanager
def _startup_lock() -> Iterator[None]:
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "leadflow-stack-startup.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_stack(state: Path, *, prefer_default_ports: bool, mongo_standalone: bool) -> Stack:
    stack = Stack(state_dir=str(state), ports=choose_ports(prefer_default_ports))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in _commands(stack.ports, state, mongo_standalone=mongo_standalone).items():
            log = (state / "logs" / f"{name}.log").open("ab")
            procs[name] = subprocess.Popen(  # noqa: S603 - our own fixed command lines
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            stack.pids[name] = procs[name].pid
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pending = set(procs)
        while pending:
            for name in list(pending):
                if procs[name].poll() is not None:
                    raise RuntimeError(
                        f"stand-in {name!r} exited with {procs[name].returncode}; "
                        f"see {state / 'logs' / (name + '.log')}"
                    )
                if _healthy(name, stack, procs[name].pid):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"stand-ins not healthy after {STARTUP_TIMEOUT_S:.0f}s: {pending}")
            if pending:
                time.sleep(0.2)
        _create_aws_resources(stack)
        wire_whatsapp_webhook(stack)
    except BaseException:
        stop_stack(stack)
        raise
    stack.save()
    return stack


def stop_stack(stack: Stack, timeout: float = 10.0) -> None:
    """Stop every process of the stack (SIGTERM, then SIGKILL for stragglers)."""
    for pid in stack.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in stack.pids.values():
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                finished = pid  # not our child (another process started it): just probe
                try:
                    os.kill(pid, 0)
                    finished = 0
                except ProcessLookupError:
                    pass
            if finished:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_stack(state_dir: str | Path, **kwargs: bool) -> Iterator[Stack]:
    stack = start_stack(state_dir, **kwargs)
    try:
        yield stack
    finally:
        stop_stack(stack)


def wait_for_stop_signal() -> None:
    """Block until Ctrl-C or SIGTERM, so the caller's clean-up (finally/with) always runs."""
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping:
        time.sleep(0.5)


def _serve_forever(args: argparse.Namespace) -> None:
    stack = start_stack(args.state_dir, prefer_default_ports=True)
    print(json.dumps({"stack": asdict(stack)}, indent=2), flush=True)
    try:
        wait_for_stop_signal()
    finally:
        stop_stack(stack)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack in the foreground")
    up.add_argument("--state-dir", default=".local")
    up.set_defaults(func=_serve_forever)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
