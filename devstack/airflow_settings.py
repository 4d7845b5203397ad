"""Load ``airflow_settings.yaml`` (Astro CLI format) into an Airflow metadata DB.

Connections and pools are upserted; Variables are upserted except that a Variable the DAGs
write themselves (the spreadsheet ids) is never in the file, so it survives a reload. Given a
running :class:`devstack.services.Stack`, endpoints on the default stand-in ports are rewritten to
the ports the stack really got.

    python -m devstack.airflow_settings [--settings airflow_settings.yaml] [--state-dir .local]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.services import DEFAULT_PORTS, HOST, Stack

REPO = Path(__file__).resolve().parent.parent
SETTINGS_FILE = REPO / "airflow_settings.yaml"


@dataclass
class Settings:
    connections: list[dict[str, Any]]
    variables: dict[str, str]
    pools: list[dict[str, Any]]


def read_settings(path: Path = SETTINGS_FILE, stack: Stack | None = None) -> Settings:
    raw = yaml.safe_load(path.read_text())["airflow"]
    settings = Settings(
        connections=raw.get("connections") or [],
        variables={v["variable_name"]: str(v["variable_value"]) for v in raw.get("variables") or []},
        pools=raw.get("pools") or [],
    )
    return _point_at(settings, stack) if stack else settings


def _point_at(settings: Settings, stack: Stack) -> Settings:
    """Rewrite default stand-in endpoints to the ports (and folders) of ``stack``."""
    moves = {
        f"{HOST}:{DEFAULT_PORTS[name]}": f"{HOST}:{port}" for name, port in stack.ports.items()
    }

    def move(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in moves.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    connections = []
    for conn in settings.connections:
        conn = move(conn)
        if conn.get("conn_type") == "mongo" and conn.get("conn_port") == DEFAULT_PORTS["mongo"]:
            conn["conn_port"] = stack.ports["mongo"]
        connections.append(conn)
    variables = {k: move(v) for k, v in settings.variables.items()}
    variables["leadflow_followups_queue_url"] = stack.queue_url
    variables["leadflow_followups_dlq_url"] = stack.dlq_url
    variables["leadflow_reminders_queue_url"] = stack.reminders_queue_url
    variables["leadflow_reminders_dlq_url"] = stack.reminders_dlq_url
    variables["leadflow_alerts_sns_topic_arn"] = stack.alerts_topic_arn
    variables["leadflow_whatsapp_statuses_queue_url"] = stack.statuses_queue_url
    variables["leadflow_whatsapp_statuses_dlq_url"] = stack.statuses_dlq_url
    variables["leadflow_object_store_base"] = (Path(stack.state_dir) / "objects").as_uri() + "/"
    return Settings(connections=connections, variables=variables, pools=settings.pools)


def connection_json(conn: dict[str, Any]) -> str:
    """The JSON form Airflow accepts in AIRFLOW_CONN_* (URI form would lose the URL scheme)."""
    body = {
        "conn_type": conn["conn_type"],
        "host": conn.get("conn_host"),
        "port": conn.get("conn_port"),
        "schema": conn.get("conn_schema"),
        "login": conn.get("conn_login"),
        "password": conn.get("conn_password"),
        "extra": conn.get("conn_extra") or {},
    }
    return json.dumps({k: v for k, v in body.items() if v not in (None, "")})


def apply_settings(settings: Settings) -> None:
    """Upsert the settings into the metadata DB that AIRFLOW_HOME points at."""
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        for conn in settings.connections:
            session.query(Connection).filter(Connection.conn_id == conn["conn_id"]).delete()
            session.add(
                Connection(
                    conn_id=conn["conn_id"],
                    conn_type=conn["conn_type"],
                    host=conn.get("conn_host"),
                    port=conn.get("conn_port"),
                    schema=conn.get("conn_schema"),
                    login=conn.get("conn_login"),
                    password=conn.get("conn_password"),
                    extra=json.dumps(conn.get("conn_extra") or {}),
                )
            )
        for pool in settings.pools:
            Pool.create_or_update_pool(
                name=pool["pool_name"],
                slots=int(pool["pool_slot"]),
                description=pool.get("pool_description", ""),
                include_deferred=False,
                session=session,
            )
        for key, value in settings.variables.items():
            Variable.set(key, value, session=session)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", type=Path, default=SETTINGS_FILE)
    parser.add_argument("--state-dir", help="a running stack's folder (rewrites endpoints)")
    args = parser.parse_args(argv)
    stack = Stack.load(args.state_dir) if args.state_dir else None
    settings = read_settings(args.settings, stack)
    apply_settings(settings)
    print(
        f"loaded {len(settings.connections)} connections, {len(settings.variables)} variables, "
        f"{len(settings.pools)} pools"
    )


if __name__ == "__main__":
    main()
