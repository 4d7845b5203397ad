"""The Sheets stand-in's copy-on-write: a write copies only the tabs it touches, and stays as
strict as Google (a batchUpdate is all or nothing, a committed version never changes, what is
saved reloads the same).

Hypothesis generates batchUpdates over three tabs (``updateCells`` of values and clears, a
column deleted and inserted again), some of which fail on a last, invalid request after changing cells, and checks after
each one against a plain model of the cells kept here (not the stand-in's code): the served
values, every earlier committed version the test held on to, and the state reloaded from disk.
"""

from __future__ import annotations

from pathlib import Path

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import clients
from devstack._http import serve_in_thread
from devstack.sheets_server import SheetsServer, load_spreadsheets

TABS = {"A": 11, "B": 22, "C": 33}  # title -> sheet id
ROWS = 6


def _call(server: SheetsServer, method: str, path: str, body: dict | None = None) -> requests.Response:
    return requests.request(method, f"{server.base_url}{path}", json=body, timeout=10)


def _book(server: SheetsServer) -> str:
    clients.reset(server.base_url)
    clients.set_settings(server.base_url, caller="user", quota=None)
    created = _call(server, "POST", "/v4/spreadsheets", {
        "sheets": [{"properties": {"sheetId": sid, "title": t, "gridProperties": {"rowCount": ROWS, "columnCount": 3}}}
                   for t, sid in TABS.items()]}).json()  # fmt: skip
    return created["spreadsheetId"]


def _values(server: SheetsServer, spreadsheet_id: str) -> dict[str, list[list]]:
    ranges = "&".join(f"ranges={t}" for t in TABS)
    answer = _call(server, "GET", f"/v4/spreadsheets/{spreadsheet_id}/values:batchGet?{ranges}")
    return {t: r.get("values", []) for t, r in zip(TABS, answer.json()["valueRanges"], strict=True)}


def _model_values(model: dict[str, dict[tuple[int, int], str]]) -> dict[str, list[list]]:
    """The values as the API returns them: trailing blanks trimmed, rows up to the last non-blank."""
    out = {}
    for tab, cells in model.items():
        last_row = max((r for r, _ in cells), default=-1)
        rows = []
        for r in range(last_row + 1):
            row = [cells.get((r, c), "") for c in range(3)]
            while row and row[-1] == "":
                row.pop()
            rows.append(row)
        out[tab] = rows
    return out


cell_writes = st.lists(
    st.tuples(st.sampled_from(sorted(TABS)), st.integers(0, ROWS - 1), st.integers(0, 2),
              st.sampled_from(["x", "y", "z", ""])),
    min_size=1, max_size=5,
)  # fmt: skip
# (writes, a tab whose first column is then deleted and inserted again (emptied), fails at the end)
batches = st.lists(
    st.tuples(cell_writes, st.sampled_from([None, None, *sorted(TABS)]), st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=batches)
def test_writes_are_all_or_nothing_never_change_a_committed_version_and_reload_the_same(
    tmp_path: Path, steps: list
) -> None:
    folder = tmp_path / "sheets"
    folder.mkdir(exist_ok=True)
    server = SheetsServer(data_dir=folder)
    serve_in_thread(server)
    try:
        spreadsheet_id = _book(server)
        model: dict[str, dict[tuple[int, int], str]] = {t: {} for t in TABS}
        versions = []  # (a committed book object, the values it held) for every step
        for writes, wiped, fails in steps:
            before = server.spreadsheet(spreadsheet_id)
            versions.append((before, {s.title: [r[:] for r in s.rows] for s in before.sheets}))
            requests_ = [
                {"updateCells": {"range": {"sheetId": TABS[tab], "startRowIndex": r, "endRowIndex": r + 1,
                                           "startColumnIndex": c, "endColumnIndex": c + 1},
                                 "rows": [{"values": [{"userEnteredValue": {"stringValue": v}} if v else {}]}],
                                 "fields": "userEnteredValue"}}
                for tab, r, c, v in writes
            ]  # fmt: skip
            if wiped:  # every row of that tab changes in place
                column = {"sheetId": TABS[wiped], "dimension": "COLUMNS", "startIndex": 0, "endIndex": 1}
                requests_ += [{"deleteDimension": {"range": column}}, {"insertDimension": {"range": column}}]
            if fails:  # after the changes: a grid that does not exist
                requests_.append({"appendDimension": {"sheetId": 999, "dimension": "ROWS", "length": 1}})
            answer = _call(server, "POST", f"/v4/spreadsheets/{spreadsheet_id}:batchUpdate", {"requests": requests_})
            assert answer.status_code == (400 if fails else 200), answer.text
            if not fails:
                for tab, r, c, v in writes:
                    if v:
                        model[tab][(r, c)] = v
                    else:
                        model[tab].pop((r, c), None)
                if wiped:
                    model[wiped] = {(r, c): v for (r, c), v in model[wiped].items() if c != 0}
            assert _values(server, spreadsheet_id) == _model_values(model)
            # Every version once committed still holds exactly what it held (copy on write).
            for book, held in versions:
                assert {s.title: s.rows for s in book.sheets} == held
        (reloaded,) = load_spreadsheets(folder)
        current = server.spreadsheet(spreadsheet_id)
        assert reloaded.to_json() == current.to_json()
    finally:
        server.stop()


def test_a_write_copies_only_the_tab_it_touches(tmp_path: Path) -> None:
    server = SheetsServer()  # in memory: what the Sheets benchmark runs
    serve_in_thread(server)
    try:
        spreadsheet_id = _book(server)
        before = server.spreadsheet(spreadsheet_id)
        cell = {"userEnteredValue": {"stringValue": "x"}}
        write = {"start": {"sheetId": TABS["A"]}, "rows": [{"values": [cell]}], "fields": "userEnteredValue"}
        body = {"requests": [{"updateCells": write}]}
        assert _call(server, "POST", f"/v4/spreadsheets/{spreadsheet_id}:batchUpdate", body).status_code == 200
        after = server.spreadsheet(spreadsheet_id)
        untouched = [t for t in TABS if t != "A"]
        # The same row lists, not copies: a write costs the tabs it touches, not the spreadsheet.
        assert all(after.sheet_by_title(t)._rows is before.sheet_by_title(t)._rows for t in untouched)
        assert after.sheet_by_title("A")._rows is not before.sheet_by_title("A")._rows
        assert before.sheet_by_title("A")._rows == []
    finally:
        server.stop()
