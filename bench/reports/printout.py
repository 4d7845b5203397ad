"""The printout: per task and stage, the naive peer, the ratios and the targets."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.reports.child import REPORTS
from bench.reports.measure import stage_named

TARGET_TRANSFORM_S = 5.0
TARGET_PEAK_RSS_MB = 500.0
TARGET_WRITES_PER_REPORT = 3


def _mb(value: float) -> str:
    return f"{value:,.0f} MB"


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _distinct(figures: dict[str, Any]) -> str:
    distinct = figures["distinct"]
    return f"{distinct:>10,} distinct" if distinct is not None else f"{'-':>10} distinct (projected without _id)"


def _print_load(kind: str, load: dict[str, Any]) -> None:
    checked = load["stand_in"]
    same = "=" if (load["reads"], load["writes"], load["request_bytes"]) == (
        checked["reads"], checked["writes"], checked["request_bytes"]) else "≠"  # fmt: skip
    print(f"    {kind:<13} {load['attempt']:<18} {load['rows']:>7,} {load['reads']:>3}/{checked['reads']:<3} "
          f"{load['writes']:>3}/{checked['writes']:<3} "
          f"{load['request_bytes']:>11,}{same}{checked['request_bytes']:<11,} "
          f"{checked['largest_request']:>10,} {load['http_seconds']:>8.2f}s "
          f"{load['stand_in_cpu']:>11.2f}s")  # fmt: skip


LOAD_HEADER = (
    f"    {'report':<13} {'run':<18} {'rows':>7} {'reads':>7} {'writes':>7} {'request bytes':>23} "
    f"{'largest':>10} {'HTTP wait':>9} {'stand-in CPU':>12}"
)


def report(
    args: argparse.Namespace,
    seed_s: float,
    seeded: dict[str, int],
    tasks: list[dict[str, Any]],
    peer: dict[str, Any],
    memory: dict[str, dict[str, dict[str, float]]],
) -> None:
    extract, transforms, loads = tasks[0], tasks[1:3], tasks[3:5]
    ex = extract["extract"]
    print(f"\n=== interaction reports: {seeded['interactions']:,} interactions, {seeded['users']:,} users, "
          f"{args.hot:,} in the hot hour; seeding {seed_s:.1f} s (in no figure below) ===")  # fmt: skip

    print("\nOURS: the DAG's steps, each task in a fresh process (peak RSS per stage sampled every 20 ms)")
    print(f"  {'task / stage':<44} {'wall s':>8} {'peak RSS':>10}  notes")
    for task in tasks:
        print(f"  {task['task']:<44} {'':>8} {_mb(task['peak_mb']):>10}  peak of the process (VmHWM); "
              f"{_mb(task['baseline_mb'])} after imports")  # fmt: skip
        for stage in task["stages"]:
            calls = f" ×{stage['calls']}" if stage["calls"] > 1 else ""
            print(f"    {stage['name'] + calls:<42} {stage['seconds']:>8.2f} {_mb(stage['peak_mb']):>10}  "
                  f"{stage['note']}")  # fmt: skip

    extract_s = stage_named(extract, "extract (MongoDB → frames)")["seconds"]
    transform_s = {t["task"]: stage_named(t, "transform")["seconds"] for t in transforms}
    totals = {
        attempt: stage_named(extract, "task total")["seconds"]
        + sum(stage_named(t, "task total")["seconds"] for t in transforms)
        + sum(stage_named(t, f"task total ({attempt})")["seconds"] for t in loads)
        for attempt in ("1st: rows added", "2nd: rows updated")
    }
    ours_peak = max(t["peak_mb"] for t in tasks)
    print(f"  path total (sum of the task totals): {totals['1st: rows added']:.2f} s with the 1st loads, "
          f"{totals['2nd: rows updated']:.2f} s with the 2nd; highest task peak RSS {_mb(ours_peak)}")  # fmt: skip

    wait = ex["cursor_wait_s"]
    print("\n  extract queries per stage (documents returned; interactions are then de-duplicated by _id):")
    for stage_name, figures in ex["per_stage"].items():
        print(f"    {stage_name:<28} {figures['queries']:>5} queries {figures['docs']:>10,} docs returned "
              f"{_distinct(figures)}")  # fmt: skip
    for name, figures in ex["per_collection"].items():
        print(f"    {name + ', all stages':<28} {figures['queries']:>5} queries {figures['docs']:>10,} docs returned "
              f"{_distinct(figures)}")  # fmt: skip
    print(f"    interactions: {ex['interactions_read']:,} distinct")
    print("\n  MongoDB stand-in share of the extract:")
    print(f"    waiting on cursors (stand-in + wire + BSON decoding): {wait:.2f} s of {extract_s:.2f} s "
          f"({wait / extract_s:.0%}); building frames and the rest: {extract_s - wait:.2f} s "
          f"({ex['cursor_docs']:,} docs from {ex['queries']} queries)")  # fmt: skip
    print(f"    the same queries replayed as raw BSON (stand-in + wire only): {ex['drain_raw_s']:.2f} s; "
          f"stand-in CPU {ex['mongo_cpu_s']:.2f} s during the task, {ex['drain_mongo_cpu_s']:.2f} s during "
          f"the replay")  # fmt: skip
    print(f"    → MongoDB (the stand-in) is {wait / extract_s:.0%} of the extract and "
          f"{wait / totals['1st: rows added']:.0%} of the whole path")  # fmt: skip

    print("\n  Sheets calls per report and run (client count / stand-in /_control/calls):")
    print(LOAD_HEADER)
    for kind, task in zip(REPORTS, loads, strict=True):
        for load in task["runs"]:
            _print_load(kind, load)
    print("    (+1 write per report for spreadsheets.create on the very first run)")
    dq = {t["task"]: t["xcom"]["data_quality"] for t in transforms}
    print(f"  data quality: {dq}")

    print(f"\nNAIVE PEER (one process; {_mb(peer['baseline_mb'])} after imports)")
    print(f"  {'stage':<44} {'wall s':>8} {'peak RSS':>10}  notes")
    for stage in peer["stages"]:
        print(f"    {stage['name']:<42} {stage['seconds']:>8.2f} {_mb(stage['peak_mb']):>10}  {stage['note']}")
    naive_total = sum(s["seconds"] for s in peer["stages"])
    print(f"  total {naive_total:.2f} s; peak RSS (VmHWM) {_mb(peer['peak_mb'])}; stand-in CPU while loading "
          f"the collections {peer['mongo_cpu_s']:.2f} s")  # fmt: skip
    for kind in REPORTS:
        load = peer["loads"][kind]
        print(f"    {kind:<13} {load['rows']:>7,} rows: {load['reads']} reads, {load['writes']} writes "
              f"({load['stand_in']['writes']} at the stand-in), {load['request_bytes']:,} bytes "
              f"({load['stand_in']['request_bytes']:,} at the stand-in; largest request "
              f"{load['stand_in']['largest_request']:,})")  # fmt: skip
    agree = {kind: peer["agree"][kind] == t["digest"] for kind, t in zip(REPORTS, transforms, strict=True)}
    print(f"  naive rows for ours' keys equal ours: {agree} "
          f"({', '.join(f'{t['digest'][1]:,} {k}' for k, t in zip(REPORTS, transforms, strict=True))})")  # fmt: skip

    print("\nRATIOS (naive / ours)")
    print(f"  time:      {naive_total / totals['1st: rows added']:6.2f}x vs ours with the 1st loads, "
          f"{naive_total / totals['2nd: rows updated']:6.2f}x with the 2nd")  # fmt: skip
    ours_rest = totals["1st: rows added"] - ex["cursor_wait_s"]
    naive_rest = naive_total - peer["listed_s"]
    print(f"  time without waiting on MongoDB: {naive_rest / ours_rest:6.2f}x ({naive_rest:.2f} s: all but "
          f"list(find()); {ours_rest:.2f} s: all but the extract's cursor waits, 1st loads)")  # fmt: skip
    print(f"  peak RSS:  {peer['peak_mb'] / ours_peak:6.2f}x (naive process vs ours' highest task)")
    for kind, task in zip(REPORTS, loads, strict=True):
        first, second = (run["request_bytes"] for run in task["runs"])
        naive_bytes = peer["loads"][kind]["request_bytes"]
        print(f"  Sheets bytes, {kind:<13} {naive_bytes / first:6.2f}x vs the 1st run, "
              f"{naive_bytes / second:6.2f}x vs the 2nd")  # fmt: skip
    transform_ratio = (
        (stage_named(peer, "transform sessions")["seconds"] + stage_named(peer, "transform consolidated")["seconds"])
        / sum(transform_s.values())
    )  # fmt: skip
    print(f"  transform time: {transform_ratio:6.2f}x; reading MongoDB: "
          f"{stage_named(peer, 'load collections')['seconds'] / extract_s:6.2f}x (list(find()) of everything vs "
          f"ours' extract)")  # fmt: skip

    if peer["probe"]:
        print("\nSCALE PROBE: ours' upsert on the full-collection reports (say, a large backfill)")
        print(LOAD_HEADER)
        for kind in REPORTS:
            for load in peer["probe"][kind]:
                _print_load(kind, load)

    print("\nSTAND-IN PROCESSES (not in the figures above): RSS now / peak")
    for when, stand_ins in memory.items():
        text = ", ".join(f"{name} {_mb(m['VmRSS'])} / {_mb(m['VmHWM'])}" for name, m in stand_ins.items())
        print(f"  {when:<14} {text}")

    writes = [run["writes"] for task in loads for run in task["runs"]]
    probe_runs = [load for kind in REPORTS for load in peer["probe"].get(kind, [])]
    total_transform = sum(transform_s.values())
    print("\nTARGETS")
    print(f"  transform of the hot hour ({ex['window_interactions']:,} window interactions, "
          f"{ex['interactions_read']:,} read) < {TARGET_TRANSFORM_S:g} s: {total_transform:.2f} s "
          f"({' + '.join(f'{k} {v:.2f}' for k, v in transform_s.items())})"
          f"  {_pass(total_transform < TARGET_TRANSFORM_S)}")  # fmt: skip
    worst = max(tasks, key=lambda t: t["peak_mb"])
    print(f"  peak RSS < {TARGET_PEAK_RSS_MB:g} MB: {_mb(ours_peak)} ({worst['task']} task; "
          f"{', '.join(f'{t['task']} {_mb(t['peak_mb'])}' for t in tasks if t is not worst)})"
          f"  {_pass(ours_peak < TARGET_PEAK_RSS_MB)}")  # fmt: skip
    print(f"  Sheets writes per report per run <= {TARGET_WRITES_PER_REPORT}: max {max(writes)} at this run's "
          f"row counts  {_pass(max(writes) <= TARGET_WRITES_PER_REPORT)}")  # fmt: skip
    if probe_runs:
        worst_probe = max(probe_runs, key=lambda r: r["writes"])
        print(f"    ... at any row count: max {worst_probe['writes']} ({worst_probe['rows']:,} rows, "
              f"{worst_probe['attempt']}) in the scale probe  "
              f"{_pass(worst_probe['writes'] <= TARGET_WRITES_PER_REPORT)}")  # fmt: skip
    failed = [run["stand_in"]["failed"] for task in loads for run in task["runs"]]
    if any(failed) or not all(agree.values()):
        print("  WARNING: failed Sheets calls or rows that differ from the naive peer's, see above", file=sys.stderr)


