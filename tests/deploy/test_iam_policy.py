"""deploy/: the MWAA execution role policy (least privilege, exactly the grants listed here) and the
AWS resource definitions it refers to, checked against each other, against botocore's API models
and against the names the code uses.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from fnmatch import fnmatchcase
from typing import Any

import pytest

from leadflow import config
from leadflow.alerts import VAR_SLACK_WEBHOOK
from leadflow.statuses import dag_settings as statuses
from leadflow.statuses.dag_settings import STATUSES_DLQ, STATUSES_QUEUE
from tests.helpers import REPO

DEPLOY = REPO / "deploy"
PLACEHOLDERS = {"Region", "AccountId", "EnvironmentName", "MwaaBucket", "DataBucket"}
SAMPLE = {"Region": "ap-south-1", "AccountId": "123456789012", "EnvironmentName": "leadflow-prod"}
ARN = "arn:aws"
R, A = "${Region}", "${AccountId}"

QUEUE_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:SendMessage",
}
# Resource "*" only where the action has no resource-level permissions (AWS requires "*").
STAR_ACTIONS = {"cloudwatch:PutMetricData", "logs:DescribeLogGroups", "s3:GetAccountPublicAccessBlock"}
EXPECTED_GRANTS: dict[str, set[str]] = {
    # MWAA's own needs (the execution role minimum, AWS-owned encryption key)
    f"{ARN}:airflow:{R}:{A}:environment/${{EnvironmentName}}": {"airflow:PublishMetrics"},
    f"{ARN}:s3:::${{MwaaBucket}}": {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetBucketLocation",
        "s3:GetBucketVersioning",
        "s3:GetBucketPublicAccessBlock",
        "s3:ListBucket",
        "s3:ListBucketVersions",
    },
    f"{ARN}:logs:{R}:{A}:log-group:airflow-${{EnvironmentName}}-*": {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:GetLogEvents",
        "logs:GetLogRecord",
        "logs:GetLogGroupFields",
        "logs:GetQueryResults",
    },
    "*": STAR_ACTIONS,
    f"{ARN}:sqs:{R}:*:airflow-celery-*": QUEUE_ACTIONS,
    # leadflow's
    f"{ARN}:sqs:{R}:{A}:{config.FOLLOWUPS_QUEUE}": QUEUE_ACTIONS,
    f"{ARN}:sqs:{R}:{A}:{config.FOLLOWUPS_DLQ}": QUEUE_ACTIONS,
    # site-visit reminders (whatsapp_reminders): the planner sends, the DAG receives/deletes/re-queues
    f"{ARN}:sqs:{R}:{A}:{config.REMINDERS_QUEUE}": QUEUE_ACTIONS,
    f"{ARN}:sqs:{R}:{A}:{config.REMINDERS_DLQ}": QUEUE_ACTIONS,
    f"{ARN}:sns:{R}:{A}:leadflow-alerts": {"sns:Publish"},
    f"{ARN}:secretsmanager:{R}:{A}:secret:airflow/connections/*": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    },
    f"{ARN}:secretsmanager:{R}:{A}:secret:airflow/variables/*": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    },
    f"{ARN}:s3:::${{DataBucket}}/leadflow/*": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
    f"{ARN}:s3:::${{DataBucket}}": {"s3:ListBucket"},
}
EXPECTED_GRANTS[f"{ARN}:s3:::${{MwaaBucket}}/*"] = EXPECTED_GRANTS[f"{ARN}:s3:::${{MwaaBucket}}"]
# Delivery receipts (whatsapp_statuses): receive/delete/leave on the queue, dead-letter to its DLQ.
EXPECTED_GRANTS[f"{ARN}:sqs:{R}:{A}:{STATUSES_QUEUE}"] = QUEUE_ACTIONS
EXPECTED_GRANTS[f"{ARN}:sqs:{R}:{A}:{STATUSES_DLQ}"] = QUEUE_ACTIONS
KMS_ACTIONS = {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"}


def load(name: str) -> Any:
    return json.loads((DEPLOY / name).read_text())


def fill(value: Any, **extra: str) -> Any:
    """Substitute the ${...} placeholders (as envsubst would) in every string of ``value``."""
    names = {**SAMPLE, "MwaaBucket": "mwaa-bucket", "DataBucket": "data-bucket", **extra}
    text = json.dumps(value)
    for key, sample in names.items():
        text = text.replace("${" + key + "}", sample)
    assert "${" not in text, text
    return json.loads(text)


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return load("iam-execution-role-policy.json")


@pytest.fixture(scope="module")
def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return policy["Statement"]


def validate(service: str, operation: str, params: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


# ---------------------------------------------------------------------------------------------
# The execution role policy


def test_policy_document_shape(policy: dict[str, Any], statements: list[dict[str, Any]]) -> None:
    assert policy["Version"] == "2012-10-17"
    assert set(policy) == {"Version", "Statement"}
    sids = [s["Sid"] for s in statements]
    assert len(sids) == len(set(sids))
    for statement in statements:
        assert statement["Effect"] == "Allow", statement["Sid"]
        assert "NotAction" not in statement
        assert "Principal" not in statement
    placeholders = set(re.findall(r"\$\{([^}]+)\}", json.dumps(policy)))
    assert placeholders <= PLACEHOLDERS


def test_no_wildcard_actions(statements: list[dict[str, Any]]) -> None:
    for statement in statements:
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{statement['Sid']}: {action}"
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), action


def test_resource_star_only_where_aws_requires_it(statements: list[dict[str, Any]]) -> None:
    star_actions = set()
    for statement in statements:
        if "*" in as_list(statement.get("Resource", [])):
            assert as_list(statement["Resource"]) == ["*"], statement["Sid"]
            assert "Condition" not in statement
            star_actions |= set(as_list(statement["Action"]))
    assert star_actions == STAR_ACTIONS


def test_grants_exactly_the_expected_actions_on_resources(statements: list[dict[str, Any]]) -> None:
    grants: dict[str, set[str]] = defaultdict(set)
    for statement in statements:
        if "NotResource" in statement:
            continue
        for resource in as_list(statement["Resource"]):
            grants[resource] |= set(as_list(statement["Action"]))
    assert dict(grants) == EXPECTED_GRANTS


def test_only_the_celery_queue_uses_a_wildcard_account(statements: list[dict[str, Any]]) -> None:
    for statement in statements:
        for resource in as_list(statement.get("Resource", [])):
            if resource != "*" and re.match(r"arn:aws:[a-z0-9-]+:[^:]*:\*:", resource):
                assert resource == f"{ARN}:sqs:{R}:*:airflow-celery-*", statement["Sid"]


def test_kms_only_through_sqs_for_mwaas_own_key(statements: list[dict[str, Any]]) -> None:
    kms = [s for s in statements if "NotResource" in s]
    assert len(kms) == 1
    statement = kms[0]
    assert set(as_list(statement["Action"])) == KMS_ACTIONS
    assert statement["NotResource"] == f"{ARN}:kms:*:{A}:key/*"
    assert statement["Condition"] == {"StringLike": {"kms:ViaService": [f"sqs.{R}.amazonaws.com"]}}
    for other in statements:
        if other is not statement:
            assert not {a for a in as_list(other["Action"]) if a.startswith("kms:")}


def test_no_conditions_beyond_the_kms_one(statements: list[dict[str, Any]]) -> None:
    assert [s["Sid"] for s in statements if "Condition" in s] == ["MwaaCeleryQueueEncryption"]


# ---------------------------------------------------------------------------------------------
# Secrets Manager backend (deploy/mwaa-airflow-configuration.json) against the policy


@pytest.fixture(scope="module")
def backend_kwargs() -> dict[str, Any]:
    options = load("mwaa-airflow-configuration.json")
    assert options["secrets.backend"] == ("airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend")
    return json.loads(options["secrets.backend_kwargs"])


@pytest.fixture(scope="module")
def lookups(backend_kwargs: dict[str, Any]) -> dict[str, list[str]]:
    """Which secret ids the real backend asks Secrets Manager for, per connection/Variable name."""
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

    asked: list[str] = []

    class Recording(SecretsManagerBackend):
        def _get_secret_value(self, secret_id: str, secrets_path: str) -> str | None:
            asked.append(secrets_path)
            return None

    backend = Recording(**backend_kwargs)
    result: dict[str, list[str]] = {}
    conn_ids = [getattr(config, n) for n in dir(config) if n.endswith("_CONN_ID")]
    for conn_id in [*conn_ids, "google_cloud_other", "smtp_default"]:
        asked.clear()
        backend.get_conn_value(conn_id)
        result[f"conn:{conn_id}"] = list(asked)
    variables = [getattr(config, n) for n in dir(config) if n.startswith("VAR_")] + [VAR_SLACK_WEBHOOK]
    variables += sorted(STATUSES_VARIABLES)
    for key in [*variables, "some_other_variable", "leadflow_session_report_spreadsheet_id_old"]:
        asked.clear()
        backend.get_variable(key)
        result[f"var:{key}"] = list(asked)
    return result


WRITTEN_BY_THE_DAGS = {config.VAR_SESSION_SPREADSHEET, config.VAR_CONSOLIDATED_SPREADSHEET}
STATUSES_VARIABLES = {statuses.VAR_STATUSES_QUEUE_URL, statuses.VAR_STATUSES_DLQ_URL}


def test_secrets_manager_asked_only_for_what_is_stored_there(lookups: dict[str, list[str]]) -> None:
    conn_ids = {getattr(config, n) for n in dir(config) if n.endswith("_CONN_ID")}
    for conn_id in conn_ids:
        assert lookups[f"conn:{conn_id}"] == [f"airflow/connections/{conn_id}"]
    assert lookups["conn:google_cloud_other"] == []
    assert lookups["conn:smtp_default"] == []
    for key in WRITTEN_BY_THE_DAGS:  # live in the metastore: never a Secrets Manager call
        assert lookups[f"var:{key}"] == [], key
    static = {getattr(config, n) for n in dir(config) if n.startswith("VAR_")} - WRITTEN_BY_THE_DAGS
    for key in static | {VAR_SLACK_WEBHOOK} | STATUSES_VARIABLES:
        assert lookups[f"var:{key}"] == [f"airflow/variables/{key}"], key
    assert lookups["var:some_other_variable"] == []


def test_policy_allows_every_secret_the_backend_asks_for(
    lookups: dict[str, list[str]], statements: list[dict[str, Any]]
) -> None:
    allowed = [
        resource
        for s in statements
        if "secretsmanager:GetSecretValue" in as_list(s["Action"])
        for resource in as_list(s["Resource"])
    ]
    for paths in lookups.values():
        for path in paths:
            # Secrets Manager ARNs end in a random 6-character suffix: -AbCdEf
            arn = f"{ARN}:secretsmanager:{R}:{A}:secret:{path}-AbCdEf"
            assert any(fnmatchcase(arn, resource) for resource in allowed), path


# ---------------------------------------------------------------------------------------------
# Queues, EventBridge rule and S3 lifecycle


@pytest.fixture(scope="module")
def queues() -> dict[str, dict[str, Any]]:
    return {q["QueueName"]: q for q in load("sqs-queues.json")["queues"]}


def test_queue_definitions_are_valid_create_queue_inputs(queues: dict[str, dict[str, Any]]) -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sqs").operation_model("CreateQueue")
    known = set(model.input_shape.members["Attributes"].key.enum)
    for queue in queues.values():
        validate("sqs", "CreateQueue", fill(queue))
        assert set(queue["Attributes"]) <= known
    names = [q["QueueName"] for q in load("sqs-queues.json")["queues"]]
    # Each DLQ must exist before the queue that redrives to it.
    assert names == [
        config.FOLLOWUPS_DLQ, config.FOLLOWUPS_QUEUE, STATUSES_DLQ, STATUSES_QUEUE,
        config.REMINDERS_DLQ, config.REMINDERS_QUEUE,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("queue", "dlq", "visibility"),
    [
        (config.FOLLOWUPS_QUEUE, config.FOLLOWUPS_DLQ, "900"),
        (config.REMINDERS_QUEUE, config.REMINDERS_DLQ, "900"),
        (STATUSES_QUEUE, STATUSES_DLQ, str(statuses.VISIBILITY_TIMEOUT_S)),
    ],
)
def test_main_queue_redrives_to_the_dlq(
    queues: dict[str, dict[str, Any]], queue: str, dlq: str, visibility: str
) -> None:
    attributes = queues[queue]["Attributes"]
    assert attributes["VisibilityTimeout"] == visibility
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == f"{ARN}:sqs:{R}:{A}:{dlq}"
    assert int(redrive["maxReceiveCount"]) == 5
    dlq_attributes = queues[dlq]["Attributes"]
    assert int(dlq_attributes["MessageRetentionPeriod"]) > int(attributes["MessageRetentionPeriod"])
    allow = json.loads(dlq_attributes["RedriveAllowPolicy"])
    assert allow["sourceQueueArns"] == [f"{ARN}:sqs:{R}:{A}:{queue}"]
    for queue in queues.values():
        assert queue["Attributes"]["SqsManagedSseEnabled"] == "true"  # no KMS grant needed


def test_eventbridge_rule_targets_the_queue_and_only_it_may_send(queues: dict[str, dict[str, Any]]) -> None:
    from leadflow.followups.contract import EventType

    events = load("eventbridge-rule.json")
    validate("events", "PutRule", fill(events["rule"]))
    validate("events", "PutTargets", fill(events["targets"]))
    rule = events["rule"]
    assert events["targets"]["Rule"] == rule["Name"]
    pattern = json.loads(rule["EventPattern"])
    assert set(pattern["detail"]["event_type"]) == {e.value for e in EventType}
    (target,) = events["targets"]["Targets"]
    assert target["Arn"] == f"{ARN}:sqs:{R}:{A}:{config.FOLLOWUPS_QUEUE}"
    assert "InputPath" not in target  # the envelope's id is the contract's fallback event_id
    assert "InputTransformer" not in target
    queue_policy = json.loads(queues[config.FOLLOWUPS_QUEUE]["Attributes"]["Policy"])
    (grant,) = queue_policy["Statement"]
    assert grant["Principal"] == {"Service": "events.amazonaws.com"}
    assert grant["Action"] == "sqs:SendMessage"
    assert grant["Resource"] == target["Arn"]
    assert grant["Condition"] == {"ArnEquals": {"aws:SourceArn": f"{ARN}:events:{R}:{A}:rule/{rule['Name']}"}}


def test_lifecycle_expires_the_intermediates_prefix_after_7_days(statements: list[dict[str, Any]]) -> None:
    lifecycle = load("s3-lifecycle.json")
    validate("s3", "PutBucketLifecycleConfiguration", {"Bucket": "data-bucket", "LifecycleConfiguration": lifecycle})
    (rule,) = lifecycle["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": "leadflow/"}
    assert rule["Expiration"] == {"Days": 7}
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 1
    # ... the same prefix the role may write to
    writable = {
        resource for s in statements if "s3:PutObject" in as_list(s["Action"]) for resource in as_list(s["Resource"])
    }
    assert writable == {f"{ARN}:s3:::${{DataBucket}}/{rule['Filter']['Prefix']}*"}


def test_deploy_docs_cover_the_files() -> None:
    docs = (REPO / "docs" / "mwaa.md").read_text()
    for path in sorted(DEPLOY.glob("*.json")):
        assert f"deploy/{path.name}" in docs, path.name
