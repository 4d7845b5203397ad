"""deploy/whatsapp-webhook-api.json: the API Gateway in front of the statuses queue, checked against
the names the receipts pipeline reads (queue, attribute, absent-signature marker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from leadflow.statuses.dag_settings import SIGNATURE_ATTRIBUTE, STATUSES_QUEUE
from leadflow.statuses.webhook import ABSENT_SIGNATURE
from tests.helpers import REPO


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads((REPO / "deploy" / "whatsapp-webhook-api.json").read_text())


def methods(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::ApiGateway::Method":
            found[resource["Properties"]["HttpMethod"]] = resource["Properties"]
    return found


def test_get_echoes_the_challenge_only_for_the_verify_token(template: dict[str, Any]) -> None:
    get = methods(template)["GET"]
    integration = get["Integration"]
    assert integration["Type"] == "MOCK"
    assert integration["PassthroughBehavior"] == "NEVER"
    request = integration["RequestTemplates"]["application/json"]["Fn::Sub"]
    assert "$input.params('hub.mode') == 'subscribe'" in request
    assert "$token == '${VerifyToken}'" in request
    assert '{"statusCode": 200}' in request
    assert '{"statusCode": 403}' in request
    ok, forbidden = integration["IntegrationResponses"]
    assert ok["ResponseTemplates"]["application/json"] == "$input.params('hub.challenge')"
    assert ok["ResponseParameters"]["method.response.header.Content-Type"] == "'text/plain'"
    assert forbidden["StatusCode"] == "403"
    assert template["Parameters"]["VerifyToken"]["NoEcho"] is True


def test_post_sends_the_raw_body_and_the_signature_header_to_the_statuses_queue(template: dict[str, Any]) -> None:
    post = methods(template)["POST"]
    integration = post["Integration"]
    assert integration["Type"] == "AWS"
    assert integration["PassthroughBehavior"] == "NEVER"
    assert integration["Uri"]["Fn::Sub"].endswith(f":sqs:path/${{AWS::AccountId}}/{STATUSES_QUEUE}")
    body = integration["RequestTemplates"]["application/json"]
    assert "Action=SendMessage" in body
    assert "&MessageBody=$util.urlEncode($input.body)" in body  # unchanged, so the HMAC still matches
    assert f"&MessageAttribute.1.Name={SIGNATURE_ATTRIBUTE}&" in body
    assert "$input.params('X-Hub-Signature-256')" in body
    assert f"#set($signature = '{ABSENT_SIGNATURE}')" in body
    assert integration["Credentials"] == {"Fn::GetAtt": ["WebhookRole", "Arn"]}


def test_the_gateway_role_may_only_send_to_the_statuses_queue(template: dict[str, Any]) -> None:
    role = template["Resources"]["WebhookRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    [policy] = role["Policies"]
    [grant] = policy["PolicyDocument"]["Statement"]
    assert grant["Action"] == "sqs:SendMessage"
    assert grant["Resource"]["Fn::Sub"].endswith(f":{STATUSES_QUEUE}")


def test_the_callback_url_is_an_output(template: dict[str, Any]) -> None:
    assert template["Outputs"]["CallbackUrl"]["Value"]["Fn::Sub"].endswith("/whatsapp")
