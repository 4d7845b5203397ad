"""The SQS stand-in keeps each SQS rule we rely on, exercised through boto3 against the running server.

The rules are AWS's documented ones (the ReceiveMessage, ChangeMessageVisibility and DeleteMessage
API reference, and the standard queue quotas). The stand-in here runs with an in-flight quota of
10 instead of SQS's 120,000, so the quota can be reached in a test.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from devstack.sqs_server import RunningServer
from tests.standins.sqs_support import IN_FLIGHT_LIMIT, counts, error_code, new_queue, receive, send


@pytest.fixture
def sqs(sqs_server: RunningServer) -> Any:
    return sqs_server.client()


def test_a_received_message_is_hidden_for_its_visibility_timeout_then_comes_back_with_a_new_handle(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["hello"])
    [first] = receive(sqs, url, VisibilityTimeout=1)
    assert counts(sqs, url) == {"visible": 0, "in_flight": 1, "delayed": 0}
    assert receive(sqs, url) == []

    [again] = receive(sqs, url, WaitTimeSeconds=5)  # long polling waits out the timeout

    assert again["MessageId"] == first["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again["ReceiptHandle"] != first["ReceiptHandle"]


def test_change_message_visibility_acts_only_on_a_message_in_flight_under_its_latest_handle(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["hello"])
    [first] = receive(sqs, url, VisibilityTimeout=600)

    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)

    assert counts(sqs, url) == {"visible": 1, "in_flight": 0, "delayed": 0}
    change = {"QueueUrl": url, "ReceiptHandle": first["ReceiptHandle"], "VisibilityTimeout": 60}
    assert error_code(lambda: sqs.change_message_visibility(**change)) == "MessageNotInflight"
    [second] = receive(sqs, url, VisibilityTimeout=600)
    # The first receipt is outdated once the message is received again.
    assert error_code(lambda: sqs.change_message_visibility(**change)) == "MessageNotInflight"
    # 12 hours at most, counted from the receive.
    too_long = {"QueueUrl": url, "ReceiptHandle": second["ReceiptHandle"], "VisibilityTimeout": 43_200 + 1}
    assert error_code(lambda: sqs.change_message_visibility(**too_long)) == "InvalidParameterValue"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=43_100)
    unknown = {"QueueUrl": url, "ReceiptHandle": "not-a-receipt", "VisibilityTimeout": 0}
    assert error_code(lambda: sqs.change_message_visibility(**unknown)) == "ReceiptHandleIsInvalid"


def test_change_message_visibility_batch_fails_entry_by_entry(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["a", "b"])
    first, second = receive(sqs, url, MaxNumberOfMessages=2, VisibilityTimeout=600)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)

    answer = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "released", "ReceiptHandle": first["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "held", "ReceiptHandle": second["ReceiptHandle"], "VisibilityTimeout": 0},
    ])  # fmt: skip

    assert [entry["Id"] for entry in answer["Successful"]] == ["held"]
    assert [(entry["Id"], entry["Code"]) for entry in answer["Failed"]] == [("released", "MessageNotInflight")]
    assert counts(sqs, url) == {"visible": 2, "in_flight": 0, "delayed": 0}


def test_a_delayed_message_is_counted_as_delayed_and_received_only_after_its_delay(sqs) -> None:
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    assert counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 1}
    assert receive(sqs, url) == []

    [message] = receive(sqs, url, WaitTimeSeconds=5)

    assert message["Body"] == "later"
    assert (
        int(message["Attributes"]["ApproximateFirstReceiveTimestamp"]) - int(message["Attributes"]["SentTimestamp"])
        >= 1000
    )
    assert error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)) == (
        "InvalidParameterValue"
    )


def test_the_queue_delay_applies_to_messages_sent_without_one(sqs) -> None:
    url = new_queue(sqs, DelaySeconds="600")
    sqs.send_message(QueueUrl=url, MessageBody="queue delay")
    sqs.send_message(QueueUrl=url, MessageBody="own delay", DelaySeconds=0)

    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["own delay"]
    assert counts(sqs, url)["delayed"] == 1


def test_long_polling_waits_its_time_on_an_empty_queue_and_returns_as_soon_as_a_message_arrives(sqs) -> None:
    url = new_queue(sqs)
    started = time.monotonic()
    assert receive(sqs, url, WaitTimeSeconds=1) == []
    assert time.monotonic() - started >= 1.0

    answers: list[list[dict[str, Any]]] = []
    waiting = threading.Thread(target=lambda: answers.append(receive(sqs, url, WaitTimeSeconds=20)))
    started = time.monotonic()
    waiting.start()
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    waiting.join(timeout=30)

    assert [m["Body"] for m in answers[0]] == ["wake up"]
    assert time.monotonic() - started < 20
    assert error_code(lambda: receive(sqs, url, WaitTimeSeconds=21)) == "InvalidParameterValue"


def test_a_receive_returns_at_most_ten_messages_and_batches_take_at_most_ten_entries(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, [f"m{n}" for n in range(25)])

    assert len(receive(sqs, url, MaxNumberOfMessages=10)) == 10
    assert error_code(lambda: receive(sqs, url, MaxNumberOfMessages=11)) == "InvalidParameterValue"
    eleven = [{"Id": str(n), "MessageBody": "x"} for n in range(11)]
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=eleven)) == ("TooManyEntriesInBatchRequest")
    # SQS checks the entries before any receipt handle.
    too_many = [{"Id": str(n), "ReceiptHandle": f"r{n}"} for n in range(11)]
    assert error_code(lambda: sqs.delete_message_batch(QueueUrl=url, Entries=too_many)) == (
        "TooManyEntriesInBatchRequest"
    )
    assert error_code(lambda: sqs.change_message_visibility_batch(
        QueueUrl=url, Entries=[{**entry, "VisibilityTimeout": 0} for entry in too_many]
    )) == "TooManyEntriesInBatchRequest"  # fmt: skip
    repeated_id = [{"Id": "same", "ReceiptHandle": handle} for handle in ("r1", "r2")]
    assert error_code(lambda: sqs.delete_message_batch(QueueUrl=url, Entries=repeated_id)) == (
        "BatchEntryIdsNotDistinct"
    )
    assert counts(sqs, url) == {"visible": 15, "in_flight": 10, "delayed": 0}


def test_delete_message_batch_deletes_each_valid_entry_and_reports_each_invalid_one(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["a", "b", "c"])
    handles = [m["ReceiptHandle"] for m in receive(sqs, url, MaxNumberOfMessages=3)]

    answer = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "0", "ReceiptHandle": handles[0]},
        {"Id": "1", "ReceiptHandle": handles[1]},
        {"Id": "bad", "ReceiptHandle": "not-a-receipt"},
    ])  # fmt: skip

    assert sorted(entry["Id"] for entry in answer["Successful"]) == ["0", "1"]
    assert [(entry["Id"], entry["Code"]) for entry in answer["Failed"]] == [("bad", "ReceiptHandleIsInvalid")]
    assert counts(sqs, url) == {"visible": 0, "in_flight": 1, "delayed": 0}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[0])  # deleting again succeeds, as on SQS


def test_an_outdated_receipt_handle_does_not_delete_the_message(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["twice"])
    [first] = receive(sqs, url, VisibilityTimeout=0)
    [second] = receive(sqs, url, VisibilityTimeout=600)

    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])  # succeeds ...

    assert counts(sqs, url) == {"visible": 0, "in_flight": 1, "delayed": 0}  # ... without deleting
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue_with_its_attributes(sqs) -> None:
    dlq = new_queue(sqs)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = new_queue(sqs, RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}))
    attributes = {"event_id": {"DataType": "String", "StringValue": "e-1"}}
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison", MessageAttributes=attributes)

    assert [m["Attributes"]["ApproximateReceiveCount"] for m in receive(sqs, url, VisibilityTimeout=0)] == ["1"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in receive(sqs, url, VisibilityTimeout=0)] == ["2"]
    assert receive(sqs, url, VisibilityTimeout=0) == []  # the third receive moves it instead

    [dead] = receive(sqs, dlq, MessageAttributeNames=["All"])
    assert (dead["MessageId"], dead["Body"], dead["MessageAttributes"]) == (sent["MessageId"], "poison", attributes)
    assert counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_message_attributes_are_returned_as_asked_for(sqs) -> None:
    url = new_queue(sqs)
    attributes = {
        "reason_code": {"DataType": "String", "StringValue": "send_failed_131026"},
        "reason_detail": {"DataType": "String", "StringValue": "undeliverable"},
        "attempt": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=attributes)

    def attributes_of(names: list[str]) -> dict[str, Any]:
        [message] = receive(sqs, url, VisibilityTimeout=0, MessageAttributeNames=names)
        return message.get("MessageAttributes", {})

    assert attributes_of(["All"]) == attributes
    assert attributes_of(["attempt"]) == {"attempt": attributes["attempt"]}
    assert set(attributes_of(["reason.*"])) == {"reason_code", "reason_detail"}
    assert attributes_of([]) == {}


def test_the_in_flight_quota_fails_a_short_poll_with_over_limit_and_empties_a_long_poll(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, [f"m{n}" for n in range(IN_FLIGHT_LIMIT + 5)])
    held: list[dict[str, Any]] = []
    while len(held) < IN_FLIGHT_LIMIT:
        held += receive(sqs, url, MaxNumberOfMessages=min(10, IN_FLIGHT_LIMIT - len(held)))

    assert error_code(lambda: receive(sqs, url)) == "OverLimit"
    assert receive(sqs, url, WaitTimeSeconds=1) == []
    assert counts(sqs, url) == {"visible": 5, "in_flight": IN_FLIGHT_LIMIT, "delayed": 0}

    sqs.delete_message(QueueUrl=url, ReceiptHandle=held[0]["ReceiptHandle"])
    assert len(receive(sqs, url, MaxNumberOfMessages=10)) == 1  # room for one


def test_purge_empties_the_queue_in_flight_and_delayed_messages_included(sqs) -> None:
    url = new_queue(sqs)
    send(sqs, url, ["a", "b"])
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=600)
    assert len(receive(sqs, url)) == 1

    sqs.purge_queue(QueueUrl=url)

    assert counts(sqs, url) == {"visible": 0, "in_flight": 0, "delayed": 0}
    sqs.send_message(QueueUrl=url, MessageBody="after")
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["after"]


def test_the_stacks_stand_in_is_the_strict_one(stack) -> None:
    """``make run`` and the tests' stack start the same stand-in, index and SQS's rules included."""
    sqs = stack.boto3_client("sqs")
    url = new_queue(sqs)
    send(sqs, url, ["probe"])
    [message] = receive(sqs, url, VisibilityTimeout=0)

    change = {"QueueUrl": url, "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 60}
    assert error_code(lambda: sqs.change_message_visibility(**change)) == "MessageNotInflight"  # moto accepted it
    sqs.delete_queue(QueueUrl=url)
