"""The pandas transforms against the hand-written fixture and small edge cases (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from leadflow.reports.extract import _interaction_rows, _user_rows_from_docs
from leadflow.reports.pipeline import SPECS
from leadflow.reports.sheets import cell, frame_rows
from leadflow.reports.transform import consolidated_report, empty_users, session_report, stamped
from tests.reports import fixture


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame.from_records(list(_interaction_rows(fixture.INTERACTIONS)))
    interactions["timestamp"] = pd.to_datetime(interactions["timestamp"], utc=True)
    users = pd.DataFrame.from_records(list(_user_rows_from_docs(fixture.USERS)))
    users["site_visit_scheduled_at"] = pd.to_datetime(users["site_visit_scheduled_at"], utc=True)
    return interactions, users


def as_rows(frame: pd.DataFrame) -> list[list]:
    """Report rows as plain values, datetimes as IST wall times (comparable with the fixture)."""
    out = []
    for row in frame.itertuples(index=False, name=None):
        out.append([v.tz_convert(fixture.IST).to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row])
    return out


def test_session_report_matches_the_hand_written_rows() -> None:
    interactions, users = frames()
    report, dq = session_report(interactions, users, ["S1", "S2", "S3", "S4", "S5", "S6"])
    assert list(report.columns) == fixture.SESSION_HEADER
    assert as_rows(report) == fixture.EXPECTED_SESSIONS
    counts = dq.counts()
    assert counts["skipped_without_session"] == 1
    assert counts["skipped_without_timestamp"] == 1
    assert counts["intents_of_wrong_type"] == 1
    assert counts["unknown_users"] == 1
    assert counts["missing_names"] == 1
    assert counts["invalid_mobiles"] == 1
    assert counts["nonstandard_rankings"] == 1


def test_consolidated_report_matches_the_hand_written_rows() -> None:
    interactions, users = frames()
    touched = [str(u) for u in (fixture.U1, fixture.U2, fixture.U3, fixture.U4, fixture.UX)]
    report, dq = consolidated_report(interactions, users, touched)
    assert list(report.columns) == fixture.CONSOLIDATED_HEADER
    assert as_rows(report) == fixture.EXPECTED_LEADS
    assert dq.counts()["unknown_users"] == 1


def test_only_touched_sessions_get_rows_but_from_all_their_interactions() -> None:
    interactions, users = frames()
    # Only S1's 11:02 message is in some window: the row still spans 10:50 → 11:03:59.
    report, _ = session_report(interactions, users, ["S1"])
    assert report["Session ID"].tolist() == ["S1"]
    assert report.loc[0, "Messages"] == 4
    assert report.loc[0, "Chat Length (min)"] == 13


def test_chat_length_rounds_down_whole_minutes() -> None:
    base = pd.Timestamp("2026-11-20T05:00:00Z")
    interactions = pd.DataFrame(
        {
            "_id": ["a", "b"],
            "user_id": [None, None],
            "session_id": ["s", "s"],
            "timestamp": [base, base + pd.Timedelta(minutes=12, seconds=59)],
            "intent": [None, None],
        }
    )
    report, dq = session_report(interactions, empty_users(), ["s"])
    assert report.loc[0, "Chat Length (min)"] == 12
    assert report.loc[0, "Intent Detected"] == ""
    assert report.loc[0, "Name"] == ""
    assert dq.counts()["unknown_users"] == 0


def test_no_touched_sessions_gives_an_empty_frame_with_the_header() -> None:
    interactions, users = frames()
    report, _ = session_report(interactions, users, [])
    assert report.empty
    assert list(report.columns) == fixture.SESSION_HEADER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (float("nan"), ""),
        (pd.NaT, ""),
        (pd.NA, ""),
        (float("inf"), ""),
        ("=SUM(A1:A2)", "=SUM(A1:A2)"),
        (3, 3),
    ],
)
def test_cells_are_json_safe(value: object, expected: object) -> None:
    assert cell(value) == expected


def test_numpy_values_become_plain_python_numbers() -> None:
    interactions, users = frames()
    report, dq = session_report(interactions, users, ["S1"])
    report = stamped(report, datetime(2026, 11, 20, 6, 0, tzinfo=UTC), dq, "Session ID")
    row = frame_rows(report, SPECS["sessions"])[0]
    assert [type(v) for v in row] == [str, str, str, float, float, int, int, str, str, float]
    assert row[-1] == pytest.approx(fixture.serial(datetime(2026, 11, 20, 11, 30, tzinfo=fixture.IST)))  # Updated
    assert row[3] == pytest.approx(fixture.serial(datetime(2026, 11, 20, 10, 50, tzinfo=fixture.IST)))


def test_month_tabs_follow_ist_not_utc() -> None:
    # 00:10 IST on 1 Dec is still 30 Nov in UTC: the row belongs to the 2026-12 tab.
    frame = pd.DataFrame({"Session Start": [pd.Timestamp("2026-11-30T18:40:00Z")]})
    assert SPECS["sessions"].tab_of(frame).tolist() == ["2026-12"]


def test_a_text_over_50000_characters_is_cut_and_counted() -> None:
    interactions, users = frames()
    users.loc[users["user_id"] == str(fixture.U1), "name"] = "A" * 60_000
    report, dq = session_report(interactions, users, ["S1", "S2"])
    report = stamped(report, datetime(2026, 11, 20, 6, 0, tzinfo=UTC), dq, "Session ID")
    assert report["Name"].map(len).max() == 50_000
    assert dq.cells_truncated == 2
    assert dq.examples["cells_truncated"] == ["S1", "S2"]
