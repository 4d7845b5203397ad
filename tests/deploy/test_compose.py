"""docker-compose.yaml: valid for a real compose parser, and everything it references exists.

The parser is Debian's docker-compose (1.29.2), which `make tools` (make/tools.mk, run by
`make test`) installs; it only parses, no Docker daemon is needed. A missing binary fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
STANDINS = {"sheets": 8091, "openai": 8092, "whatsapp": 8093}
EXPECTED_IMAGES = {
    "postgres": "postgres:16",
    "mongo": "mongo:8.0",
}
AIRFLOW_BASE_IMAGE = "apache/airflow:3.3.1-python3.12"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose resolves it: env_file(s), then `environment`."""
    env: dict[str, str] = {}
    env_files = service.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        for line in (REPO / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({k: str(v) for k, v in environment.items()})
    return env


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


def test_docker_compose_config_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: run `make tools` (make/tools.mk apt-installs Debian's "
            "docker-compose 1.29.2, which `make test` does first), or install docker-compose 1.29+"
        )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_images_are_pinned_by_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image or service.get("build"), name
        if image and not service.get("build"):
            repository, _, tag = image.rpartition(":")
            assert repository, f"{name}: {image} has no tag"
            assert "/" not in tag, f"{name}: {image} has no tag"
            assert tag != "latest", f"{name}: {image}"
    for name, image in EXPECTED_IMAGES.items():
        assert services[name]["image"] == image
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", services["localstack"]["image"])
    dockerfile = REPO / services["airflow-scheduler"]["build"]["dockerfile"]
    assert f"FROM {AIRFLOW_BASE_IMAGE}" in dockerfile.read_text().splitlines()


def test_airflow_image_installs_requirements_with_constraints(services: dict[str, dict[str, Any]]) -> None:
    build = services["airflow-scheduler"]["build"]
    text = (REPO / build["dockerfile"]).read_text()
    install = [line for line in text.splitlines() if line.startswith("RUN pip install")]
    assert install, "no pip install in the Dockerfile"
    assert "-r /opt/leadflow/requirements.txt" in install[0]
    assert "-c /opt/leadflow/constraints.txt" in install[0]
    copied = [line for line in text.splitlines() if line.startswith("COPY")]
    assert any("requirements.txt" in line and "constraints.txt" in line for line in copied)
    ignore = (REPO / f"{build['dockerfile']}.dockerignore").read_text().split()
    assert {"*", "!requirements.txt", "!constraints.txt"} <= set(ignore)


def test_references_resolve(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    named_volumes = set(compose.get("volumes") or {})
    used_volumes = set()
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot service"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                used_volumes.add(source)
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            assert (REPO / env_file).is_file(), f"{name}: env_file {env_file} does not exist"
        build = service.get("build")
        if build:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context}"
            if isinstance(build, dict) and "dockerfile" in build:
                assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
    assert used_volumes == named_volumes, "declared but unused volumes"


def test_commands_reference_existing_files(services: dict[str, dict[str, Any]]) -> None:
    """Container paths under the bind mounts map back to files in the repository."""
    for name, service in services.items():
        mounts = {}
        for volume in service.get("volumes") or []:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts[target] = REPO / source
        command = service.get("command") or []
        words = command if isinstance(command, list) else command.split()
        for word in " ".join(words).split():
            for target, source in mounts.items():
                if word.startswith(target + "/"):
                    assert (source / word[len(target) + 1 :]).is_file(), f"{name}: {word}"


def test_standins_run_the_project_modules_on_their_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, port in STANDINS.items():
        service = services[name]
        command = service["command"]
        assert command[:3] == ["python", "-m", f"devstack.{name}_server"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == str(port)
        assert command[command.index("--data-dir") + 1] == "/data"
        assert any(v.startswith("./devstack:") for v in service["volumes"])
        assert str(port) in " ".join(service["healthcheck"]["test"])


def test_airflow_services_share_the_metadata_db_that_holds_the_connections(
    services: dict[str, dict[str, Any]],
) -> None:
    """airflow-init loads the connections into the DB every Airflow container uses."""
    init_env = _environment(services["airflow-init"])
    assert "apply_settings.py" in (REPO / "docker" / "airflow" / "init.sh").read_text()
    db_url = init_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == db_url, name
        assert not [k for k in env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))], name
        if name != "airflow-init":
            assert _depends_on(services[name]).get("airflow-init") == "service_completed_successfully", name
    # Tasks run in the scheduler (LocalExecutor) and the SQS sensor in the triggerer: they start
    # only once the services their connections point at are up.
    scheduler = _depends_on(services["airflow-scheduler"])
    for dependency in ("mongo", "localstack", *STANDINS):
        assert scheduler.get(dependency) == "service_healthy", dependency
    assert _depends_on(services["airflow-triggerer"]).get("localstack") == "service_healthy"


def _loaded_settings(services: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Run the init's settings loader (dry run) with the init's environment."""
    env = {**os.environ, **_environment(services["airflow-init"])}
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "airflow" / "apply_settings.py"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_settings_loaded_in_compose_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    result = _loaded_settings(services)
    settings = json.loads(result.stdout)
    connections = {c["conn_id"]: c for c in settings["connections"]}
    settings_file = yaml.safe_load((REPO / "airflow_settings.yaml").read_text())["airflow"]
    assert set(connections) == {c["conn_id"] for c in settings_file["connections"]}
    assert set(settings["variables"]) == {v["variable_name"] for v in settings_file["variables"]}

    def hosts(value: Any) -> set[str]:
        text = json.dumps(value)
        return set(re.findall(r"https?://([A-Za-z0-9_.-]+)(?::\d+)?", text))

    ports = {"mongo": 27017, "localstack": 4566, **STANDINS}
    for conn in connections.values():
        for host in hosts(conn) | ({conn["conn_host"]} if conn.get("conn_host", "").isidentifier() else set()):
            assert host in services, f"{conn['conn_id']} points at {host}, not a compose service"
        for host, port in re.findall(r"//([A-Za-z0-9_-]+):(\d+)", json.dumps(conn)):
            assert ports.get(host) == int(port), f"{conn['conn_id']}: {host}:{port}"
    assert (connections["mongo_default"]["conn_host"], connections["mongo_default"]["conn_port"]) == ("mongo", 27017)
    for key, value in settings["variables"].items():
        for host in hosts(value):
            assert host in services, f"Variable {key} points at {host}"
    assert settings["variables"]["leadflow_object_store_base"].startswith("s3://")
    bucket = settings["variables"]["leadflow_object_store_base"].split("/")[2]
    assert services["localstack"]["environment"]["LEADFLOW_BUCKET"] == bucket
    assert "127.0.0.1" not in result.stdout
    assert "localhost" not in result.stdout


def test_settings_loader_rejects_an_endpoint_the_settings_do_not_use(services: dict[str, dict[str, Any]]) -> None:
    env = {**os.environ, **_environment(services["airflow-init"])}
    endpoints = json.loads(env["LEADFLOW_ENDPOINT_MAP"])
    endpoints["127.0.0.1:1"] = "nowhere:1"
    env["LEADFLOW_ENDPOINT_MAP"] = json.dumps(endpoints)
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "airflow" / "apply_settings.py"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr


def test_localstack_creates_the_deploy_resources(services: dict[str, dict[str, Any]]) -> None:
    service = services["localstack"]
    assert "./deploy:/opt/leadflow-deploy:ro" in service["volumes"]
    script = (REPO / "docker" / "localstack" / "init-aws.sh").read_text()
    for needed in ("sqs-queues.json", "eventbridge-rule.json", "s3-lifecycle.json", "leadflow-alerts"):
        assert needed in script
    assert set(service["environment"]["SERVICES"].split(",")) >= {"sqs", "sns", "s3", "events"}


def _created_queues() -> list[dict[str, Any]]:
    """The queue definitions LocalStack's init script creates, in its order."""
    script = (REPO / "docker" / "localstack" / "init-aws.sh").read_text()
    definitions = json.loads((REPO / "deploy" / "sqs-queues.json").read_text())["queues"]
    return [definitions[int(n)] for n in re.findall(r'sqs-queues\.json" queues\.(\d+)\)', script)]


def test_whatsapp_standin_posts_receipts_to_the_statuses_queue_with_the_connections_secret(
    services: dict[str, dict[str, Any]],
) -> None:
    """The stand-in's receipts reach whatsapp_statuses in compose as they do in `make run`."""
    from devstack.whatsapp_receipts import Webhook

    service = services["whatsapp"]
    webhook = Webhook.from_env(_environment(service))
    assert webhook is not None, "the whatsapp stand-in is not told where to post its receipts"
    settings = json.loads(_loaded_settings(services).stdout)
    connection = {c["conn_id"]: c for c in settings["connections"]}["whatsapp_default"]
    assert webhook.app_secret == connection["conn_extra"]["app_secret"]
    assert webhook.queue_url == settings["variables"]["leadflow_whatsapp_statuses_queue_url"]
    assert re.fullmatch(r"http://localstack:4566/?", webhook.sqs_endpoint or "")
    assert webhook.region == services["localstack"]["environment"]["AWS_DEFAULT_REGION"]
    # The queue exists before the first receipt: LocalStack creates it (DLQ first) and the
    # stand-in starts once LocalStack's init has completed.
    created = [q["QueueName"] for q in _created_queues()]
    name = webhook.queue_url.rstrip("/").rsplit("/", 1)[1]
    assert name in created, f"init-aws.sh does not create {name}"
    [definition] = [q for q in _created_queues() if q["QueueName"] == name]
    dlq = json.loads(definition["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[1]
    assert dlq in created[: created.index(name)], f"{dlq} must be created before {name}"
    dlq_url = settings["variables"]["leadflow_whatsapp_statuses_dlq_url"]
    assert dlq_url.rsplit("/", 1)[1] == dlq
    assert _depends_on(service).get("localstack") == "service_healthy"
    # The receipts are posted with boto3, which the plain python image lacks.
    dockerfile = (REPO / service["build"]["dockerfile"]).read_text()
    assert any(line.startswith("RUN pip install") and "boto3" in line and "-c " in line
               for line in dockerfile.splitlines())  # fmt: skip


def test_every_airflow_service_loads_the_leadflow_plugin(services: dict[str, dict[str, Any]]) -> None:
    """The official image reads plugins from /opt/airflow/plugins (its AIRFLOW_HOME/plugins)."""
    for name in AIRFLOW_SERVICES:
        assert "./plugins:/opt/airflow/plugins:ro" in services[name]["volumes"], name
    assert (REPO / "plugins" / "leadflow_plugin.py").is_file()
