"""`make run`: the whole product on this machine, no cloud credentials.

Starts the stand-ins (seeded with demo data relative to now), a migrated Airflow home with the
connections, Variables and pools of airflow_settings.yaml, and Airflow 3.3.1 itself: api-server
(UI on http://localhost:8080), scheduler, dag-processor and triggerer, with the LocalExecutor.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from devstack.airflow_home import LOCAL_PASSWORD, LOCAL_USER, prepare_home
from devstack.services import Stack, start_stack, stop_stack, wait_for_stop_signal

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_TIMEOUT_S = 180


def demo_end() -> datetime:
    """The demo data ends at the last full IST hour, so the next scheduled run has data."""
    from devstack.seed import IST

    now = datetime.now(UTC).astimezone(IST)
    return now.replace(minute=0, second=0, microsecond=0)


def seed_demo(stack: Stack, interactions: int = 3_000) -> dict[str, int]:
    from devstack.seed import SeedSpec, seed_database

    return seed_database(stack.mongo_uri, SeedSpec(interactions=interactions, end=demo_end() + timedelta(hours=1)))


def sync_dags() -> None:
    """Every DAG of dags/ into the metadata DB (tags included), as the dag-processor writes them:
    for tests and benchmarks that serve the UI or the plugin without running a dag-processor."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    from devstack.airflow_home import REPO

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)


def load_settings(stack: Stack, env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "devstack.airflow_settings", "--state-dir", stack.state_dir], env=env, check=True
    )


@contextmanager
def airflow_components(env: dict[str, str], log_dir: Path, port: int) -> Iterator[list[subprocess.Popen]]:
    """Run the four Airflow 3 components until the block exits; wait for the API to be healthy."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for component in COMPONENTS:
            log = (log_dir / f"{component}.log").open("ab")
            args = [sys.executable, "-m", "airflow", component]
            if component == "api-server":
                args += ["--port", str(port)]
            procs.append(
                subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
            )
        wait_healthy(f"http://127.0.0.1:{port}", procs, log_dir)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_healthy(base_url: str, procs: list[subprocess.Popen], log_dir: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in zip(COMPONENTS, procs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited ({proc.returncode}); see {log_dir / (name + '.log')}")
        try:
            health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=2).json()
            if health.get("scheduler", {}).get("status") == "healthy":
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"Airflow did not become healthy within {HEALTH_TIMEOUT_S}s; logs in {log_dir}")


def banner(stack: Stack, state: Path, port: int) -> str:
    return f"""
  leadflow is running.
    Airflow UI ........ http://localhost:{port}   (login {LOCAL_USER} / {LOCAL_PASSWORD})
    Leadflow page ..... http://localhost:{port}/plugin/leadflow   (and a Summary tab on every run)
    Sheets produced ... make sheets     (stand-in data in {state / "stack" / "sheets"})
    Sheets as HTML .... make sheets, then open {state / "stack" / "sheets" / "index.html"}
    WhatsApp outbox ... make outbox     (stand-in data in {state / "stack" / "whatsapp"})
    Queue an event .... .venv/bin/python -m devstack.events --state-dir {state}
    Logs .............. {state / "airflow" / "logs"}  and  {state / "stack" / "logs"}
    Stand-ins ......... MongoDB {stack.mongo_uri}, SQS {stack.sqs_url}
  Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=".local")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--interactions", type=int, default=3_000)
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()

    stack = start_stack(state / "stack", prefer_default_ports=True)
    try:
        print("seeded demo data:", seed_demo(stack, args.interactions), flush=True)
        env = prepare_home(state / "airflow", api_port=args.port)
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
        load_settings(stack, env)
        from devstack.events import queue_demo_events

        queue_demo_events(stack)
        with airflow_components(env, state / "airflow" / "logs" / "components", args.port):
            print(banner(stack, state, args.port), flush=True)
            wait_for_stop_signal()
            print("stopping…", flush=True)
    finally:
        stop_stack(stack)


if __name__ == "__main__":
    main()
