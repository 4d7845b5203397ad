"""Generated interleavings of sends, receives, deletes and visibility changes, each answer of the SQS
stand-in checked against a plain model of SQS's rules.

The model is a dict of message states written from AWS's documentation, sharing nothing with the
stand-in's index. Delays and visibility timeouts are 0 or 600 s, so no timer ends during an example
and the model needs no clock: a message is visible, in flight or delayed, until deleted. SQS does not
promise which visible messages a receive returns, so the model only checks that each returned one
was visible, and then follows the stand-in's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.standins.sqs_support import IN_FLIGHT_LIMIT, counts, error_code, new_queue

LONG = 600  # seconds: never ends within an example


@dataclass
class ModelMessage:
    state: str  # "visible" | "in_flight" | "delayed" | "deleted"
    receives: int = 0
    handles: list[str] = field(default_factory=list)  # the last one is the latest


# Batches of 1 or 10 (the API's bounds) reach the quota and redeliveries within a few steps;
# a delete or visibility change picks one of the receipt handles issued so far by the integer.
KINDS = [
    ("send", 10, 0), ("send", 1, 0), ("send", 10, LONG),
    ("receive", 10, LONG), ("receive", 1, LONG), ("receive", 10, 0), ("receive", 1, 0),
    ("delete", 0, 0), ("change", 0, 0), ("change", 0, LONG),
]  # fmt: skip
operations = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000)).map(
        lambda pick: (pick[0][0], pick[0][1] or pick[1], pick[0][2])
    ),
    min_size=10,
    max_size=30,
)


def test_every_answer_follows_sqs_rules(sqs_server: Any) -> None:
    sqs = sqs_server.client()
    edges_reached: set[str] = set()

    @settings(max_examples=50, deadline=None, derandomize=True, database=None)
    @given(operations)
    def interleaving(steps: list[tuple[str, int, int]]) -> None:
        run_against_model(sqs, steps, edges_reached)

    interleaving()
    # The examples are worth something only if they reach the rules' edges.
    assert edges_reached == {"quota", "outdated receipt", "not in flight"}


def run_against_model(sqs: Any, steps: list[tuple[str, int, int]], edges_reached: set[str]) -> None:
    url = new_queue(sqs)
    model: dict[str, ModelMessage] = {}
    handle_owner: dict[str, str] = {}  # every receipt handle issued → its message id

    def in_state(state: str) -> int:
        return sum(message.state == state for message in model.values())

    try:
        for operation, number, seconds in steps:
            if operation == "send":
                entries = [{"Id": str(n), "MessageBody": f"b{n}", "DelaySeconds": seconds} for n in range(number)]
                for sent in sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]:
                    model[sent["MessageId"]] = ModelMessage("delayed" if seconds else "visible")
            elif operation == "receive":
                receive_ = {"QueueUrl": url, "MaxNumberOfMessages": number, "VisibilityTimeout": seconds,
                            "AttributeNames": ["ApproximateReceiveCount"]}  # fmt: skip
                room = IN_FLIGHT_LIMIT - in_state("in_flight")
                if seconds and room <= 0:  # a short poll at the quota
                    edges_reached.add("quota")
                    assert error_code(lambda r=receive_: sqs.receive_message(**r)) == "OverLimit"
                    continue
                got = sqs.receive_message(**receive_).get("Messages", [])
                expected = min(number, in_state("visible"), room if seconds else number)
                if expected < min(number, in_state("visible")):
                    edges_reached.add("quota")
                assert len(got) == expected
                assert len({m["MessageId"] for m in got}) == len(got)
                for message in got:
                    state = model[message["MessageId"]]
                    assert state.state == "visible"
                    state.receives += 1
                    assert message["Attributes"]["ApproximateReceiveCount"] == str(state.receives)
                    state.handles.append(message["ReceiptHandle"])
                    handle_owner[message["ReceiptHandle"]] = message["MessageId"]
                    state.state = "in_flight" if seconds else "visible"
            elif handle_owner:
                handle = list(handle_owner)[number % len(handle_owner)]
                state = model[handle_owner[handle]]
                latest = state.handles[-1] == handle and state.state != "deleted"
                if operation == "delete":
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)  # always succeeds
                    if latest:
                        state.state = "deleted"
                    elif state.state != "deleted":
                        edges_reached.add("outdated receipt")  # it deletes nothing
                elif latest and state.state == "in_flight":
                    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=seconds)
                    state.state = "in_flight" if seconds else "visible"
                else:  # refused, and nothing changes
                    edges_reached.add("not in flight")
                    assert error_code(
                        lambda h=handle, s=seconds: sqs.change_message_visibility(
                            QueueUrl=url, ReceiptHandle=h, VisibilityTimeout=s
                        )
                    ) in {"MessageNotInflight", "ReceiptHandleIsInvalid"}
            assert counts(sqs, url) == {
                "visible": in_state("visible"),
                "in_flight": in_state("in_flight"),
                "delayed": in_state("delayed"),
            }
    finally:
        sqs.delete_queue(QueueUrl=url)
