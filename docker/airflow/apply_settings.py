"""Load airflow_settings.yaml into the compose stack's metadata DB, pointed at the compose services.

airflow_settings.yaml stays the single source of the connections, Variables and pools. Its
endpoints name the local stand-ins on 127.0.0.1 and their default ports (what ``make run`` uses);
in docker-compose every service has its own host name, so three environment variables (set on the
``airflow-init`` service in docker-compose.yaml) adapt them:

``LEADFLOW_ENDPOINT_MAP``
    JSON ``{"127.0.0.1:27018": "mongo:27017", ...}``. Every ``host:port`` is rewritten wherever it
    occurs: a connection's host + port fields, inside a URL (host, extra) or a Variable. Each key
    must occur in the settings, so a port changed in airflow_settings.yaml fails loudly here.
``LEADFLOW_VARIABLE_OVERRIDES``
    JSON ``{name: value}`` for Variables that differ beyond the host (LocalStack's queue URL
    layout and account, S3 instead of a local folder for the object store).
``LEADFLOW_CONNECTION_EXTRAS``
    JSON ``{conn_id: {key: value}}`` merged into a connection's extra (e.g. path-style S3).

Afterwards no connection or Variable may still name 127.0.0.1 or localhost (that would point a
container at itself).

    python apply_settings.py [--settings airflow_settings.yaml] [--dry-run]

``--dry-run`` prints the result as JSON and touches no database (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from devstack.airflow_settings import SETTINGS_FILE, Settings, apply_settings, read_settings

LOOPBACK = ("127.0.0.1", "localhost")


class SettingsError(Exception):
    pass


def _json_env(name: str, environ: dict[str, str]) -> dict[str, Any]:
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise SettingsError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return value


def _replace(value: Any, endpoints: dict[str, str], used: set[str]) -> Any:
    if isinstance(value, str):
        for old, new in endpoints.items():
            if old in value:
                used.add(old)
                value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: _replace(v, endpoints, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, endpoints, used) for v in value]
    return value


def rewrite(settings: Settings, environ: dict[str, str]) -> Settings:
    endpoints = {str(k): str(v) for k, v in _json_env("LEADFLOW_ENDPOINT_MAP", environ).items()}
    overrides = {str(k): str(v) for k, v in _json_env("LEADFLOW_VARIABLE_OVERRIDES", environ).items()}
    extras = _json_env("LEADFLOW_CONNECTION_EXTRAS", environ)
    used: set[str] = set()

    connections = []
    for conn in settings.connections:
        conn = dict(conn)
        host, port = conn.get("conn_host"), conn.get("conn_port")
        if host and port and f"{host}:{port}" in endpoints:
            used.add(f"{host}:{port}")
            new_host, _, new_port = endpoints[f"{host}:{port}"].rpartition(":")
            conn["conn_host"], conn["conn_port"] = new_host, int(new_port)
        conn = _replace(conn, endpoints, used)
        if conn["conn_id"] in extras:
            conn["conn_extra"] = {**(conn.get("conn_extra") or {}), **extras[conn["conn_id"]]}
        connections.append(conn)
    variables = {k: _replace(v, endpoints, used) for k, v in settings.variables.items()}

    unused = sorted(set(endpoints) - used)
    if unused:
        raise SettingsError(f"LEADFLOW_ENDPOINT_MAP names endpoints airflow_settings.yaml does not use: {unused}")
    unknown = sorted(set(extras) - {c["conn_id"] for c in connections})
    if unknown:
        raise SettingsError(f"LEADFLOW_CONNECTION_EXTRAS names unknown connections: {unknown}")
    variables.update(overrides)

    result = Settings(connections=connections, variables=variables, pools=settings.pools)
    leftovers = [where for where, value in _strings(result) if any(loopback in value for loopback in LOOPBACK)]
    if leftovers:
        raise SettingsError(f"still pointing at the container itself after rewriting: {leftovers}")
    return result


def _strings(settings: Settings) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(where: str, value: Any) -> None:
        if isinstance(value, str):
            found.append((where, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{where}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{where}[{i}]", v)

    for conn in settings.connections:
        walk(f"connection {conn['conn_id']}", {k: v for k, v in conn.items() if k != "conn_id"})
    for key, value in settings.variables.items():
        walk(f"variable {key}", value)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, default=SETTINGS_FILE)
    parser.add_argument("--dry-run", action="store_true", help="print the rewritten settings; no database")
    args = parser.parse_args(argv)
    try:
        settings = rewrite(read_settings(args.settings), dict(os.environ))
    except SettingsError as error:
        print(f"apply_settings: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps({"connections": settings.connections, "variables": settings.variables,
                          "pools": settings.pools}, indent=2))  # fmt: skip
        return 0
    apply_settings(settings)
    print(
        f"loaded {len(settings.connections)} connections, {len(settings.variables)} variables and "
        f"{len(settings.pools)} pools from {args.settings} (rewritten for docker-compose)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
