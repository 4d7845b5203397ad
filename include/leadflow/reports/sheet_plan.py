"""The plan of one upsert, from what the read found: which rows are rewritten in place, which
keys are new to a tab or move to another tab, which rows are cleared (a moved key's old row,
every copy of a key but its newest), and which key cells must still hold what the read saw.
Pure functions: no calls to Google here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from leadflow.reports.sheets import ReportSpec


@dataclass(frozen=True)
class Location:
    tab: str
    row: int  # 1-based sheet row
    version: Any  # the row's ``Updated`` cell as read


@dataclass
class Plan:
    updates: dict[str, dict[int, list[Any]]] = field(default_factory=dict)  # tab -> row -> values, in place
    appends: dict[str, list[list[Any]]] = field(default_factory=dict)  # rows of keys new to the sheet
    move_appends: dict[str, list[list[Any]]] = field(default_factory=dict)  # rows whose key leaves another row
    clears: dict[str, list[int]] = field(default_factory=dict)  # old rows of moved keys, duplicates
    expected: list[tuple[str, int, list[str]]] = field(default_factory=list)  # (tab, first row, keys there now)
    next_row: dict[str, int] = field(default_factory=dict)  # the first row below the tab's keyed rows
    # Where each key's row is once the write lands (for the row index), and the rows it clears.
    placed: dict[str, Location] = field(default_factory=dict)
    cleared: list[tuple[str, Location]] = field(default_factory=list)
    rows_updated: int = 0
    rows_added: int = 0
    rows_moved: int = 0
    rows_kept_newer: int = 0
    duplicates_repaired: int = 0


def version_number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -math.inf


def plan_write(
    frame: pd.DataFrame,
    targets: pd.Series,
    rows: list[list[Any]],
    where: dict[str, list[Location]],
    spec: ReportSpec,
    gone: set[str],
    next_rows: dict[str, int] | None = None,
) -> Plan:
    """``next_rows``: tab -> the first free row below its data, when the caller knows it (the row
    index); else it is the row after the last key read in that tab."""
    plan = Plan()
    version = spec.columns.index(spec.version_column)
    last: dict[str, int] = {}
    for locations in where.values():
        for loc in locations:
            last[loc.tab] = max(last.get(loc.tab, 1), loc.row)
    untouched = dict(where)
    for key, tab, row in zip(frame[spec.key], targets, rows, strict=True):
        locations = untouched.pop(str(key), [])
        # The newest copy wins (a tie goes to the earliest tab: a move only ever goes to an
        # earlier month); every other copy of the key is cleared in the same batchUpdate.
        ranked = sorted(locations, key=lambda loc: (-version_number(loc.version), loc.tab, loc.row))
        plan.duplicates_repaired += max(len(locations) - 1, 0)
        if ranked and is_newer(ranked[0].version, row[version]):
            plan.rows_kept_newer += 1  # a later read already wrote this row: never go back
            keep: Location | None = ranked[0]
            plan.placed[str(key)] = ranked[0]
        else:
            keep = next((loc for loc in ranked if loc.tab == tab), None)
            if keep:
                plan.updates.setdefault(tab, {})[keep.row] = row
                plan.rows_updated += 1
                plan.placed[str(key)] = Location(tab, keep.row, row[version])
            else:
                plan.rows_moved += bool(locations)
                plan.rows_added += 1
                (plan.move_appends if locations else plan.appends).setdefault(tab, []).append(row)
        for loc in ranked:
            if loc is not keep:
                clear(plan, loc, str(key))
    for key, locations in untouched.items():  # keys this run does not write here
        if key in gone:  # written into another spreadsheet: no copy stays here
            plan.rows_moved += 1
            for loc in locations:
                clear(plan, loc, key)
            continue
        ranked = sorted(locations, key=lambda loc: (-version_number(loc.version), loc.tab, loc.row))
        plan.duplicates_repaired += len(ranked) - 1
        plan.placed[key] = ranked[0]
        for loc in ranked[1:]:
            clear(plan, loc, key)
    for tab, by_row in plan.updates.items():
        for first, block in consecutive(by_row):
            plan.expected.append((tab, first, [str(r[0]) for r in block]))
    if next_rows is None:
        plan.next_row = {t: last.get(t, 1) + 1 for t in set(last) | set(plan.appends) | set(plan.move_appends)}
    else:
        plan.next_row = {t: next_rows.get(t, 2) for t in set(next_rows) | set(plan.appends) | set(plan.move_appends)}
    for tab in set(plan.appends) | set(plan.move_appends):
        appended = plan.appends.get(tab, []) + plan.move_appends.get(tab, [])  # in the order they are written
        plan.expected.append((tab, plan.next_row[tab], [""] * len(appended)))  # still empty
        for offset, row in enumerate(appended):
            plan.placed[str(row[0])] = Location(tab, plan.next_row[tab] + offset, row[version])
    return plan


def consecutive(by_row: dict[int, list[Any]]) -> list[tuple[int, list[list[Any]]]]:
    """Rows by number as runs of consecutive rows: (first row, rows)."""
    numbers = sorted(by_row)
    runs: list[tuple[int, list[list[Any]]]] = []
    start = 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            runs.append((numbers[start], [by_row[n] for n in numbers[start:i]]))
            start = i
    return runs


def clear(plan: Plan, loc: Location, key: str) -> None:
    plan.clears.setdefault(loc.tab, []).append(loc.row)
    plan.cleared.append((key, loc))
    plan.expected.append((loc.tab, loc.row, [key]))


def is_newer(existing: Any, ours: Any) -> bool:
    """Whether the sheet's ``Updated`` serial is later than ours (a blank or text cell is not)."""
    return version_number(existing) > ours
