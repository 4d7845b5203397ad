"""Benchmark of the SQS stand-in: what one call costs as the queue gets deeper, before and after.

    python -m bench.sqs_standin [--depths 1000,10000,100000] [--calls 30]

Starts the stand-in twice on free ports — with moto's own message list (``--moto-receive``,
the stand-in as it was) and with the message index (as ``make run`` starts it) — fills one
standard queue to each depth in turn, and at each depth times ``--calls`` of each call (5 of the counts) the
follow-ups make per batch: ``ReceiveMessage`` (10 messages, visibility 900 s, as
``process_messages`` receives), ``DeleteMessageBatch`` of those 10, and ``GetQueueAttributes``
(the three ApproximateNumberOfMessages* counts). It prints the median and 95th-percentile time of
each call and the stand-in's CPU per receive + delete pair. SQS's own cost does not grow with
the backlog; the stand-in's should not either, or a benchmark at depth measures the stand-in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.sqs_server import RunningServer, running_sqs_server

MODES = {"moto as is": ("--moto-receive",), "indexed": ()}
COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
FILL_THREADS = 4
COUNT_CALLS = 5  # moto's counts take seconds each at 100,000 messages


@dataclass
class Row:
    mode: str
    depth: int
    receive_ms: list[float]
    delete_ms: list[float]
    counts_ms: list[float]
    cpu_ms_per_pair: float


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def fill(server: RunningServer, url: str, count: int) -> None:
    def send_batches(batches: int) -> None:
        sqs = server.client()
        entries = [{"Id": str(n), "MessageBody": '{"event_id": "bench", "user_id": 1}'} for n in range(10)]
        for _ in range(batches):
            sqs.send_message_batch(QueueUrl=url, Entries=entries)

    batches = -(-count // 10)
    shares = [batches // FILL_THREADS + (n < batches % FILL_THREADS) for n in range(FILL_THREADS)]
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(send_batches, shares))


def measure(server: RunningServer, url: str, mode: str, depth: int, calls: int) -> Row:
    sqs = server.client()
    receive_ms, delete_ms, counts_ms = [], [], []
    cpu_before = process_cpu_seconds(server.pid)
    for _ in range(calls):
        answer, ms = timed(lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=900))
        receive_ms.append(ms)
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(answer["Messages"])]
        _, ms = timed(lambda e=entries: sqs.delete_message_batch(QueueUrl=url, Entries=e))
        delete_ms.append(ms)
    cpu_pair_ms = (process_cpu_seconds(server.pid) - cpu_before) * 1000 / calls
    for _ in range(min(calls, COUNT_CALLS)):
        counts_ms.append(timed(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS))[1])
    fill(server, url, calls * 10)  # back to the depth for the next row
    return Row(mode, depth, receive_ms, delete_ms, counts_ms, cpu_pair_ms)


def run_mode(mode: str, depths: list[int], calls: int) -> list[Row]:
    rows = []
    with running_sqs_server(*MODES[mode]) as server:
        sqs = server.client()
        url = sqs.create_queue(QueueName="bench", Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
        queued = 0
        for depth in depths:
            started = time.monotonic()
            fill(server, url, depth - queued)
            queued = depth
            print(f"  {mode}: filled to {depth:,} in {time.monotonic() - started:.1f} s", flush=True)
            rows.append(measure(server, url, mode, depth, calls))
    return rows


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def print_table(rows: list[Row]) -> None:
    print(f"{'stand-in':<11} {'depth':>8}  {'receive 10 ms':>15}  {'delete 10 ms':>15}  {'3 counts ms':>15}  "
          f"{'CPU ms/receive+delete':>21}")  # fmt: skip
    print(f"{'':<11} {'':>8}  {'median / p95':>15}  {'median / p95':>15}  {'median / p95':>15}")
    for row in rows:
        timings = (row.receive_ms, row.delete_ms, row.counts_ms)
        cells = [f"{statistics.median(ms):6.1f} / {p95(ms):6.1f}" for ms in timings]
        print(f"{row.mode:<11} {row.depth:>8,}  {cells[0]:>15}  {cells[1]:>15}  {cells[2]:>15}  "
              f"{row.cpu_ms_per_pair:>21.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="1000,10000,100000", help="queue depths, comma-separated, rising")
    parser.add_argument("--calls", type=int, default=30, help="timed calls of each kind per depth")
    parser.add_argument("--modes", default=",".join(MODES), help=f"which stand-ins, of: {', '.join(MODES)}")
    args = parser.parse_args(argv)
    depths = sorted(int(depth) for depth in args.depths.split(","))
    rows = [row for mode in args.modes.split(",") for row in run_mode(mode, depths, args.calls)]
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
