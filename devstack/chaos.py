"""MWAA's own faults, injected into the topology stack (devstack/topology.py) from a seed.

``make chaos`` (tests/chaos) runs a follow-up burst and a report backfill on the topology while
:class:`Chaos` injects, in an order and at moments drawn from ``random.Random(seed)``:

* a SIGKILL of the worker running ``process_messages`` after some of its sends (a container lost);
* a SIGKILL of the worker running a Sheets write (``write_sessions`` / ``write_consolidated``);
* a SIGTERM of a worker with a running task: Celery's warm shutdown, then SIGKILL after ECS's stop
  timeout, then a new worker (MWAA's scale-in and replacement);
* a scheduler killed and started again later; the triggerer holding a deferred SQS sensor killed
  and started again later;
* Postgres stopped (fast shutdown: every connection dropped, as a failover does) and started;
  Redis killed and started empty (its queued Celery messages are lost, as with a new broker);
* in the background, overlapping the above: the WhatsApp stand-in unreachable (stopped, then
  started on the same port) and the MongoDB stand-in unreachable.

MWAA replaces a component that exits by itself; :class:`Supervisor` does the same here (after
``REPLACE_AFTER_S``), except for those a fault holds down. Every fault is recorded with when it
began and ended, so the run can print how long the queue took to drain after each.

Three clocks are shortened, and the run says so: Airflow's heartbeat timeout (a killed task is
noticed after 60 s, not 300 s) and queued timeout (120 s, not 600 s), both ``[scheduler]``
options MWAA accepts; and the 20 minutes a dead consumer's messages stay invisible on SQS, which
the run skips by making every in-flight message visible at once (SIGUSR1 to the SQS stand-in,
:func:`devstack.sqs_index.end_all_visibility_timeouts`) only once no consumer task is alive.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack import clients
from devstack.services import Stack, _commands, _healthy, wire_whatsapp_webhook
from devstack.topology import WORKERS, Topology

REPLACE_AFTER_S = 5.0
ECS_STOP_TIMEOUT_S = 30.0  # ECS's default stopTimeout: SIGTERM, then SIGKILL this much later
PROCESS_FAULTS = (
    "kill_process_messages",
    "kill_sheets_write",
    "sigterm_worker",
    "kill_scheduler",
    "kill_triggerer",
    "restart_postgres",
    "restart_redis",
)
# How long each stand-in is unreachable (the real durations).
OUTAGES = {"whatsapp": 120.0, "mongo": 60.0}
WRITE_TASKS = ("write_sessions", "write_consolidated")


@dataclass
class Fault:
    name: str
    began_s: float
    ended_s: float = float("nan")
    detail: str = ""


@dataclass
class Plan:
    """What the seed chose: the order of the process faults, the pauses between them, when each
    outage begins, and the small choices inside each fault."""

    seed: int
    order: list[str]
    pauses_s: list[float]
    outage_starts_s: dict[str, float]
    rng: random.Random = field(repr=False)

    @classmethod
    def from_seed(cls, seed: int, only: set[str] | None = None) -> Plan:
        """The seed's plan; ``only`` keeps those faults (``CHAOS_FAULTS``: a fault named alone, e.g.
        to see a check fail with a protection removed), the same moments as the full plan."""
        rng = random.Random(seed)
        order = rng.sample(PROCESS_FAULTS, len(PROCESS_FAULTS))
        pauses = [rng.uniform(3, 12) for _ in order]
        starts = {name: rng.uniform(10, 120) for name in OUTAGES}
        if only:
            unknown = only - {*PROCESS_FAULTS, *(f"{name}_unreachable" for name in OUTAGES)}
            if unknown:
                raise ValueError(f"unknown faults {sorted(unknown)}")
            kept = [(name, pause) for name, pause in zip(order, pauses, strict=True) if name in only]
            order, pauses = [name for name, _ in kept], [pause for _, pause in kept]
            starts = {name: at for name, at in starts.items() if f"{name}_unreachable" in only}
        return cls(seed, order, pauses, starts, rng)


class Supervisor:
    """Starts again, after ``REPLACE_AFTER_S``, any Airflow component that exited by itself (as MWAA
    replaces a failed container); a fault holds its target down meanwhile."""

    def __init__(self, topology: Topology, names: list[str]) -> None:
        self.topology, self.names = topology, names
        self.held: set[str] = set()
        self.replaced: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for name in self.names:
                if name not in self.held and not _alive(self.topology.pids[name]):
                    time.sleep(REPLACE_AFTER_S)
                    if name not in self.held and not _alive(self.topology.pids[name]):
                        self.replaced.append(name)
                        self.topology.start(name)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Chaos:
    def __init__(self, topology: Topology, stack: Stack, plan: Plan, supervisor: Supervisor, zero: float) -> None:
        self.topology, self.stack, self.plan, self.supervisor = topology, stack, plan, supervisor
        self.rng, self.zero = plan.rng, zero
        self.faults: list[Fault] = []
        self.whatsapp_settings: dict = {}
        self.before_fault: Callable[[str], None] = lambda _name: None

    def now(self) -> float:
        return time.monotonic() - self.zero

    def log(self, message: str) -> None:
        print(f"  [chaos +{self.now():6.1f}s] {message}", flush=True)

    # -- where tasks run ------------------------------------------------------------------------

    def running(self, task_ids: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """(task_id, run_id, worker) of the task instances of ``task_ids`` now running."""
        return self.topology.query(
            "SELECT task_id, run_id, hostname FROM task_instance WHERE state = 'running' AND task_id = ANY(%s)"
            " AND hostname IS NOT NULL",
            list(task_ids),
        )

    def wait(self, what: str, probe: Callable[[], object], timeout_s: float) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                found = probe()
                if found:
                    return found
            time.sleep(0.3)
        self.log(f"no {what} within {timeout_s:.0f} s; the fault goes ahead anyway")
        return None

    # -- the process faults ----------------------------------------------------------------------

    def run_process_faults(self) -> None:
        for name, pause in zip(self.plan.order, self.plan.pauses_s, strict=True):
            time.sleep(pause)
            self.before_fault(name)
            fault = Fault(name, self.now())
            self.faults.append(fault)
            fault.detail = getattr(self, name)()
            fault.ended_s = self.now()
            self.log(f"{name}: {fault.detail}")

    def _kill_worker(self, worker: str, *, sigterm_first: bool = False) -> str:
        self.supervisor.held.add(worker)
        try:
            if sigterm_first:
                # To the worker only (ECS signals a container's main process): Celery's warm shutdown.
                os.kill(self.topology.pids[worker], signal.SIGTERM)
                gone = self._exited(worker, ECS_STOP_TIMEOUT_S)
                how = "left within the stop timeout" if gone else "SIGKILLed after the stop timeout"
            else:
                how = "SIGKILLed"
            self.topology.kill(worker, signal.SIGKILL)
            time.sleep(self.rng.uniform(5, 20))
            self.topology.start(worker)
        finally:
            self.supervisor.held.discard(worker)
        return how

    def _exited(self, name: str, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if not _alive(self.topology.pids[name]):
                return True
            time.sleep(0.5)
        return False

    def kill_process_messages(self) -> str:
        # Past the first 100 sends the run is also sending what it received itself, beyond the batch
        # its sensor stored: a kill there loses those messages if SQS lost them before the ledger
        # had their outcome (the protection `make chaos` must show; docs/operating.md).
        sends = self.rng.randint(100, 300)
        first: list[int] = []  # the outbox's length at the first answer (WhatsApp may be down now)

        def mid_batch() -> list | None:
            count = len(clients.outbox(self.stack.control_url("whatsapp")))
            first[:] = first or [count]
            running = self.running(("process_messages",))
            return running if running and count - first[0] >= sends else None

        found = self.wait("process_messages mid-batch", mid_batch, 180)
        if not found:
            return self._kill_worker(self.rng.choice(WORKERS)) + " a worker (process_messages not caught running)"
        task, run, worker = found[0]
        return f"{self._kill_worker(worker)} {worker} running {task} [{run}] after >= {sends} sends"

    def kill_sheets_write(self) -> str:
        found = self.wait("Sheets write running", lambda: self.running(WRITE_TASKS), 240)
        if not found:
            return self._kill_worker(self.rng.choice(WORKERS)) + " a worker (no Sheets write caught running)"
        time.sleep(self.rng.uniform(0, 1.5))
        task, run, worker = found[0]
        return f"{self._kill_worker(worker)} {worker} running {task} [{run}]"

    def sigterm_worker(self) -> str:
        found = self.wait("task running", lambda: self.running(("process_messages", "apply_receipts", *WRITE_TASKS,
                                                                    "extract", "transform_sessions")), 120)  # fmt: skip
        task, run, worker = found[0] if found else ("-", "-", self.rng.choice(WORKERS))
        return f"SIGTERM to {worker} running {task} [{run}]: {self._kill_worker(worker, sigterm_first=True)}"

    def _down_for(self, name: str, seconds: float, sig: signal.Signals = signal.SIGKILL) -> None:
        self.supervisor.held.add(name)
        try:
            self.topology.kill(name, sig)
            time.sleep(seconds)
            self.topology.start(name)
        finally:
            self.supervisor.held.discard(name)

    def kill_scheduler(self) -> str:
        name = self.rng.choice(["scheduler-1", "scheduler-2"])
        down = self.rng.uniform(10, 40)
        self._down_for(name, down)
        return f"{name} SIGKILLed, started again after {down:.0f} s"

    def kill_triggerer(self) -> str:
        def holder() -> str | None:
            rows = self.topology.query(
                "SELECT j.hostname FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id"
                " JOIN job j ON t.triggerer_id = j.id WHERE ti.state = 'deferred' AND ti.task_id = 'receive_messages'"
            )
            return rows[0][0] if rows else None

        found = self.wait("deferred SQS sensor on a triggerer", holder, 120)
        name = str(found or self.rng.choice(["triggerer-1", "triggerer-2"]))
        down = self.rng.uniform(10, 40)
        self._down_for(name, down)
        why = "holding a deferred SQS sensor" if found else "no sensor deferred then: chosen at random"
        return f"{name} ({why}) SIGKILLed, started again after {down:.0f} s"

    def restart_postgres(self) -> str:
        down = self.rng.uniform(0, 20)
        # Fast shutdown: every session is dropped at once, as in a Multi-AZ failover.
        self._down_for("postgres", down, signal.SIGINT)
        self._wait_for(lambda: self.topology.query("SELECT 1"), "postgres", 60)
        return f"stopped (fast shutdown), started again after {down:.0f} s"

    def restart_redis(self) -> str:
        down = self.rng.uniform(0, 10)
        self._down_for("redis", down)
        return f"SIGKILLed, started empty after {down:.0f} s"

    @staticmethod
    def _wait_for(ready: Callable[[], object], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ready():
                    return
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not back within {timeout_s:.0f} s")
            time.sleep(0.5)

    # -- the stand-ins unreachable ---------------------------------------------------------------

    def outage(self, name: str) -> None:
        """``name``'s stand-in stopped (connections refused) and started on the same port and data."""
        time.sleep(self.plan.outage_starts_s[name])
        self.before_fault(f"{name}_unreachable")
        fault = Fault(f"{name}_unreachable", self.now())
        self.faults.append(fault)
        stop_standin(self.stack, name)
        time.sleep(OUTAGES[name])
        start_standin(self.stack, name)
        if name == "whatsapp":
            clients.set_settings(self.stack.control_url("whatsapp"), **self.whatsapp_settings)
        fault.ended_s = self.now()
        fault.detail = f"unreachable for {OUTAGES[name]:.0f} s"
        self.log(f"{fault.name}: {fault.detail}")

    def end_visibility_timeouts(self) -> None:
        """Every message SQS holds for a consumer visible now (the 20 min a dead one's wait)."""
        os.kill(self.stack.pids["sqs"], signal.SIGUSR1)


def stop_standin(stack: Stack, name: str) -> None:
    pid = stack.pids[name]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def start_standin(stack: Stack, name: str) -> None:
    """``name`` again on its port and state folder, as services.start_stack started it."""
    state = Path(stack.state_dir)
    command = _commands(stack.ports, state)[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with (state / "logs" / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    stack.pids[name] = proc.pid
    deadline = time.monotonic() + 60
    while not _healthy(name, stack, proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} stand-in did not come back; see {state / 'logs' / name}.log")
        time.sleep(0.2)
    if name == "whatsapp":
        wire_whatsapp_webhook(stack)
