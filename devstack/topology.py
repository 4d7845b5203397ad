"""The production (MWAA) topology on one machine, for the end-to-end test in tests/topology/.

What MWAA runs, as separate processes: a Postgres metadata DB, the CeleryExecutor on a Redis
broker, **two schedulers**, one dag-processor, **two triggerers**, the api-server and **two
Celery workers**. Each worker has its own working directory, ``HOME``, ``TMPDIR``, log folder and, when we
are root, its own ``/tmp`` (a private mount namespace, ``unshare``), as separate containers
would: a task that reads a local file another worker wrote fails, even under ``/tmp``. The
object store is ``s3://`` on the moto stand-in. The topology's own folder is under ``/var/tmp``,
outside the workers' private ``/tmp``. Postgres and Redis are Debian's packages,
installed on first use (apt-get; Postgres runs as the ``postgres`` user when we are root).

Every process is started in its own session and stopped by its PID (process group) when the
``with`` block ends, also on failure.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devstack.airflow_home import LOCAL_PASSWORD, LOCAL_USER, airflow_env
from devstack.services import HOST, Stack, free_port, stop_stack

APT_PACKAGES = ("postgresql", "redis-server")
DB_NAME = DB_USER = "airflow"
STARTUP_TIMEOUT_S = 480
WORKERS = ("worker-1", "worker-2")
SCHEDULERS = 2
TRIGGERERS = 2
WORKER_PRELOAD = "leadflow.worker_preload"
REPO = Path(__file__).resolve().parent.parent


def hostname() -> str:
    """``[core] hostname_callable``: the worker's name, so task instances show where they ran."""
    return os.environ.get("LEADFLOW_HOSTNAME") or socket.getfqdn()


# ---------------------------------------------------------------------------------------------
# System packages


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def ensure_system_packages() -> Path:
    """Debian's postgresql and redis-server, installed if missing; the Postgres bin folder."""
    if _postgres_bin() is None or shutil.which("redis-server") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)  # noqa: S603
        subprocess.run(  # noqa: S603 - fixed package names
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    bin_dir = _postgres_bin()
    if bin_dir is None or shutil.which("redis-server") is None:
        raise RuntimeError(f"could not install {APT_PACKAGES}")
    return bin_dir


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Topology:
    root: Path
    env: dict[str, str]
    api_url: str
    db_dsn: str
    pids: dict[str, int] = field(default_factory=dict)
    logs: Path = Path()
    # How each process was started (command line, environment, folder), so one can be replaced.
    commands: dict[str, tuple[list[str], dict[str, str] | None, Path | None]] = field(default_factory=dict)

    @functools.cached_property
    def http(self) -> requests.Session:
        """One connection and one token for the test's many polls (the token lives 24 h)."""
        session = requests.Session()
        answer = session.post(
            f"{self.api_url}/auth/token", json={"username": LOCAL_USER, "password": LOCAL_PASSWORD}, timeout=30
        )
        answer.raise_for_status()
        session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return session

    def api(self, method: str, path: str, **kwargs) -> dict:
        answer = self.http.request(method, f"{self.api_url}/api/v2/{path}", timeout=60, **kwargs)
        if not answer.ok:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:2000]}")
        return answer.json()

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str) -> str:
        """A manual run (no logical date, as the UI's trigger button makes); its run id."""
        return self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]

    def set_pool(self, name: str, slots: int) -> None:
        body = {"pool": name, "slots": slots, "include_deferred": False}  # the PATCH body requires all three
        self.api("PATCH", f"pools/{name}", params={"update_mask": "slots"}, json=body)

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, *, wait_s: float = 30.0) -> bool:
        """Send ``sig`` to the process group of ``name`` (a container's processes all go at once); True
        once they have all exited within ``wait_s`` (a warm shutdown may outlast it)."""
        pid = self.pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        return False

    def start(self, name: str) -> int:
        """Start ``name`` again as it was first started (same command, ports and folders); its PID."""
        command, env, cwd = self.commands[name]
        return _start(name, command, self.logs, self.pids, env=env, cwd=cwd).pid

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.db_dsn)) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()


def _start(name: str, command: list[str], logs: Path, pids: dict[str, int], **kwargs) -> subprocess.Popen:
    log = (logs / f"{name}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own fixed command lines
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )
    pids[name] = proc.pid
    return proc


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _private_tmp(tmp: Path, keep: tuple[Path, ...] = ()) -> list[str]:
    """A command prefix giving the process its own ``/tmp`` (``tmp`` bound over it in a private
    mount namespace), as a separate container has; only ``TMPDIR`` differs when we are not root.
    The ``keep`` folders that live under the host's ``/tmp`` (the checkout and its venv, when the
    repository was cloned there) are bound back in: a container has its code, just not our files."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    host_tmp = tmp.parent / "host-tmp"
    host_tmp.mkdir(exist_ok=True)
    host = Path("/tmp")  # noqa: S108 - the host's /tmp is what the worker must not see
    kept = sorted({str(p.resolve()) for p in keep if p.resolve().is_relative_to(host)})
    script = 'mount --bind /tmp "$1" && mount --bind "$0" /tmp'
    for path in kept:
        inner = Path(path).relative_to(host)
        script += f' && mkdir -p "{path}" && mount --bind "$1/{inner}" "{path}"'
    script += ' && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(tmp), str(host_tmp)]


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait(what: str, ready, procs: dict[str, subprocess.Popen], logs: Path, timeout: float = STARTUP_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}; see {logs}/{name}.log")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout:.0f} s; logs in {logs}")
        time.sleep(0.5)


def _start_postgres(bin_dir: Path, root: Path, logs: Path, pids: dict, procs: dict) -> int:
    data = root / "postgres"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(  # noqa: S603
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8"]),
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    port = free_port()
    command = [
        str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
        "-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off", "-c", "max_connections=300",
    ]  # fmt: skip
    procs["postgres"] = _start("postgres", _as_postgres(command), logs, pids)

    def ready() -> bool:
        import psycopg2

        with contextlib.closing(psycopg2.connect(host=HOST, port=port, user=DB_USER, dbname="postgres")) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if not cursor.fetchone():
                    cursor.execute(f"CREATE DATABASE {DB_NAME}")
        return True

    _wait("postgres", ready, procs, logs)
    return port


def _start_redis(root: Path, logs: Path, pids: dict, procs: dict) -> int:
    port = free_port()
    command = [
        "redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(root), "--protected-mode", "yes",
    ]  # fmt: skip
    procs["redis"] = _start("redis", command, logs, pids)

    def ready() -> bool:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    _wait("redis", ready, procs, logs)
    return port


def topology_env(home: Path, api_port: int, db_port: int, redis_port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **airflow_env(home, api_port)}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)  # SQLite-only
    dsn = f"{DB_USER}@{HOST}:{db_port}/{DB_NAME}"
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{dsn}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{HOST}:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{dsn}",
            # One task per worker at a time: while one worker is busy the next task goes to the
            # other, so a run's tasks spread over both (as on MWAA's containers).
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            # As deploy/mwaa-airflow-configuration.json sets it on MWAA.
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"imports": [WORKER_PRELOAD]}),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.topology.hostname",
            "AIRFLOW__CORE__PARALLELISM": "8",
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def running_topology(stack: Stack, extra_env: dict[str, str] | None = None) -> Iterator[Topology]:
    """Start the whole topology against ``stack``; stop every process by PID when the block exits."""
    bin_dir = ensure_system_packages()
    # Not under /tmp (each worker gets its own) and 0755: the postgres user must reach its data.
    root = Path(tempfile.mkdtemp(prefix="leadflow-topology-", dir="/var/tmp"))
    root.chmod(0o755)
    logs = root / "logs"
    logs.mkdir()
    pids: dict[str, int] = {}
    procs: dict[str, subprocess.Popen] = {}
    airflow_procs: dict[str, subprocess.Popen] = {}
    # A SIGTERM (a CI timeout, a kill of pytest) must still reach the `finally` that stops the
    # dozen processes below; Python's default would exit without it.
    previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        db_port = _start_postgres(bin_dir, root, logs, pids, procs)
        redis_port = _start_redis(root, logs, pids, procs)
        api_port = free_port()
        home = root / "airflow"
        home.mkdir()
        (home / "passwords.json").write_text(f'{{"{LOCAL_USER}": "{LOCAL_PASSWORD}"}}')
        env = topology_env(home, api_port, db_port, redis_port, extra_env or {})
        airflow = [sys.executable, "-m", "airflow"]
        subprocess.run([*airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
        subprocess.run(  # noqa: S603
            [sys.executable, "-m", "devstack.airflow_settings", "--state-dir", stack.state_dir], env=env, check=True
        )
        topology = Topology(
            root=root, env=env, api_url=f"http://{HOST}:{api_port}",
            db_dsn=f"postgresql://{DB_USER}@{HOST}:{db_port}/{DB_NAME}", pids=pids, logs=logs,
        )  # fmt: skip
        components: dict[str, tuple[list[str], dict[str, str], Path | None]] = {
            "api-server": (["api-server", "--port", str(api_port)], {}, None),
            "dag-processor": (["dag-processor"], {}, None),
        }
        for n in range(1, SCHEDULERS + 1):
            components[f"scheduler-{n}"] = (["scheduler"], {}, None)
        for n in range(1, TRIGGERERS + 1):
            # Its own name in the job table, so a test can tell which triggerer runs a trigger.
            components[f"triggerer-{n}"] = (
                ["triggerer"],
                {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()), "LEADFLOW_HOSTNAME": f"triggerer-{n}"},
                None,
            )  # fmt: skip
        for name in WORKERS:
            own = root / name
            for sub in ("home", "tmp", "logs"):
                (own / sub).mkdir(parents=True)
            components[name] = (
                ["celery", "worker", "--celery-hostname", f"{name}@%h",
                 "--concurrency", env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]],
                {
                    "HOME": str(own / "home"), "TMPDIR": str(own / "tmp"), "LEADFLOW_HOSTNAME": name,
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(own / "logs"),
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                },
                own,
            )  # fmt: skip

        # All at once: a worker needs the api-server only to run a task, and none is queued
        # before the test unpauses a DAG through that api-server.
        for name, (args, own_env, cwd) in components.items():
            keep = (REPO, Path(sys.prefix))
            prefix = _private_tmp(Path(own_env["TMPDIR"]), keep) if name in WORKERS else []
            topology.commands[name] = ([*prefix, *airflow, *args], {**env, **own_env}, cwd)
            airflow_procs[name] = _start(name, [*prefix, *airflow, *args], logs, pids, env={**env, **own_env}, cwd=cwd)
        topology.commands.update({name: (list(proc.args), None, None) for name, proc in procs.items()})

        last: dict = {}

        def healthy() -> bool:
            last.update(requests.get(f"{topology.api_url}/api/v2/monitor/health", timeout=5).json())
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((last.get(p) or {}).get("status") == "healthy" for p in parts)

        try:
            _wait("the Airflow components", healthy, airflow_procs, logs)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; last health answer: {last}") from error
        yield topology
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        # Airflow first (it holds Postgres and Redis connections), then the servers.
        stop_stack(Stack(state_dir=str(root), ports={}, pids={n: pids[n] for n in airflow_procs}), timeout=30)
        stop_stack(Stack(state_dir=str(root), ports={}, pids={n: p for n, p in pids.items() if n not in airflow_procs}))
        if sys.exc_info()[0] is None and os.environ.get("LEADFLOW_KEEP_TOPOLOGY") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"topology logs kept in {logs}", file=sys.stderr)
