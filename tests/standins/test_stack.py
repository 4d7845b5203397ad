"""The stand-in stack: every service answers its real client over the wire, then stops cleanly."""

from __future__ import annotations

import json
import os
import socket
from unittest import mock

import pymongo
import pytest

from devstack.airflow_settings import connection_json
from devstack.services import HOST, Stack, running_stack
from devstack.sheets_server.server import LOCAL_SHARED_DRIVE_FOLDER


def test_stack_answers_real_clients_and_stops_cleanly(tmp_path) -> None:
    import requests
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build
    from openai import OpenAI

    with running_stack(tmp_path) as stack:
        saved = Stack.load(tmp_path)
        assert saved.ports == stack.ports

        sqs = stack.boto3_client("sqs")
        attrs = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["maxReceiveCount"] in (5, "5")
        assert redrive["deadLetterTargetArn"].endswith(":leadflow-followups-dlq")
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody="ping")
        got = sqs.receive_message(QueueUrl=stack.queue_url, WaitTimeSeconds=1)["Messages"]
        assert [m["Body"] for m in got] == ["ping"]

        with pymongo.MongoClient(stack.mongo_uri) as client:
            client.leadflow.probe.insert_one({"_id": 1, "nested": {"a": 2}})
            assert client.leadflow.probe.find_one({"_id": 1}, {"nested.a": 1}) == {"_id": 1, "nested": {"a": 2}}

        google = {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": stack.sheets_url},
                  "cache_discovery": False}  # fmt: skip
        # As on Google, a service account creates spreadsheets only inside a shared-drive folder.
        created = build("drive", "v3", **google).files().create(
            body={"name": "probe", "mimeType": "application/vnd.google-apps.spreadsheet",
                  "parents": [LOCAL_SHARED_DRIVE_FOLDER]},
            supportsAllDrives=True, fields="id",
        ).execute()  # fmt: skip
        got = build("sheets", "v4", **google).spreadsheets().get(spreadsheetId=created["id"]).execute()
        assert got["properties"]["title"] == "probe"

        reply = OpenAI(base_url=stack.openai_url, api_key="sk-test", max_retries=0).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": '<<<DATA{"name": "Asha", "event_type": "inquiry_followup"}DATA>>>'}],
        )
        assert "Asha" in reply.choices[0].message.content

        sent = requests.post(
            f"{stack.whatsapp_url}/v25.0/1/messages",
            headers={"Authorization": "Bearer t"},
            json={"messaging_product": "whatsapp", "to": "919876543210", "type": "text", "text": {"body": "hi"}},
            timeout=5,
        )
        assert sent.status_code == 200
        assert sent.json()["messages"][0]["id"].startswith("wamid.")
        ports = dict(stack.ports)
        pids = dict(stack.pids)

    for port in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=2)
    for pid in pids.values():
        # The processes were reaped by stop_stack, so the pids are gone.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_mongo_hook_reaches_the_stand_in_through_the_connection(airflow_settings, stack) -> None:
    from leadflow.mongo import get_database

    # Outside a task the SDK resolves connections from env/secrets, not the metadata DB:
    # hand it the same connection in the JSON form MWAA's secrets would hold.
    mongo = next(c for c in airflow_settings.connections if c["conn_id"] == "mongo_default")
    with mock.patch.dict(os.environ, {"AIRFLOW_CONN_MONGO_DEFAULT": connection_json(mongo)}):
        db = get_database()
        assert db.name == "leadflow"
        assert db.command("ping")["ok"] == 1


def test_airflow_settings_load_into_a_fresh_metadata_db(airflow_settings, stack) -> None:
    from airflow.models import Connection, Pool, Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        conn_ids = {c.conn_id for c in session.query(Connection)}
        pool = session.query(Pool).filter(Pool.pool == "google_sheets").one()
        assert pool.slots == 1
        mongo = session.query(Connection).filter(Connection.conn_id == "mongo_default").one()
        assert (mongo.conn_type, mongo.port, mongo.schema) == ("mongo", stack.ports["mongo"], "leadflow")
        openai = session.query(Connection).filter(Connection.conn_id == "openai_default").one()
        assert openai.host == stack.openai_url
        whatsapp = session.query(Connection).filter(Connection.conn_id == "whatsapp_default").one()
        assert json.loads(whatsapp.extra)["api_version"] == "v25.0"
    assert {"mongo_default", "google_cloud_default", "aws_default", "openai_default", "whatsapp_default"} <= conn_ids
    assert Variable.get("leadflow_followups_queue_url") == stack.queue_url
    assert Variable.get("leadflow_followups_dlq_url") == stack.dlq_url
