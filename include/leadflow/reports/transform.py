"""Pure pandas transforms: extracted interactions and user profiles → the two report frames.

No I/O here, so the rules below are unit-tested directly. Messy documents never raise: a field
that is missing or of the wrong type becomes a blank cell and a data-quality count; only
interactions that cannot be placed at all (no session id, no timestamp) are dropped, and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pandas as pd

from leadflow.phones import to_e164

SESSION_COLUMNS = [
    "Session ID", "Name", "Mobile", "Session Start", "Session End", "Chat Length (min)",
    "Messages", "Intent Detected", "User ID",
]  # fmt: skip
CONSOLIDATED_COLUMNS = [
    "User ID", "Name", "Mobile", "Config", "Rank", "Chat History", "Visit Scheduled", "Sessions",
    "Messages", "First Interaction", "Last Interaction",
]  # fmt: skip
# The dashboard's funnel needs the visit's status (scheduled / completed / cancelled) itself.
CONSOLIDATED_COLUMNS += ["Visit Status"]
# When the row's data was read from MongoDB (IST in the sheet): a row is only ever replaced by
# data read at the same time or later, so a late or re-run write cannot take a row backwards.
UPDATED = "Updated"
DATETIME_COLUMNS = {"Session Start", "Session End", "First Interaction", "Last Interaction", UPDATED}
# Google Sheets refuses a cell over 50,000 characters (and with it the whole write).
MAX_CELL_CHARS = 50_000
STANDARD_RANKINGS = {"High", "Medium", "Low"}

INTERACTION_FIELDS = ["_id", "user_id", "session_id", "timestamp", "intent"]
USER_FIELDS = [
    "user_id", "name", "mobile", "preferred_configuration", "ranking",
    "site_visit_status", "site_visit_scheduled_at",
]  # fmt: skip


@dataclass
class DataQuality:
    """What was messy in one run, reported in the task log and the run summary."""

    skipped_without_session: int = 0
    skipped_without_timestamp: int = 0
    intents_of_wrong_type: int = 0
    unknown_users: int = 0
    missing_names: int = 0
    invalid_mobiles: int = 0
    nonstandard_rankings: int = 0
    cells_truncated: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, counter: str, ids: Iterable[object], limit: int = 5) -> None:
        ids = [str(i) for i in ids]
        setattr(self, counter, getattr(self, counter) + len(ids))
        if ids:
            self.examples.setdefault(counter, []).extend(ids[: max(0, limit - len(self.examples.get(counter, [])))])

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "examples"}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


def empty_interactions() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype="object") for name in INTERACTION_FIELDS})
    frame["timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def empty_users() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype="object") for name in USER_FIELDS})
    frame["site_visit_scheduled_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def placeable_interactions(interactions: pd.DataFrame, dq: DataQuality) -> pd.DataFrame:
    """Interactions with a session id and a timestamp; wrong-typed intents become blank."""
    frame = interactions.drop_duplicates(subset="_id")
    has_session = frame["session_id"].map(lambda v: isinstance(v, str) and v != "")
    has_time = frame["timestamp"].notna()
    dq.note("skipped_without_session", frame.loc[~has_session, "_id"])
    dq.note("skipped_without_timestamp", frame.loc[has_session & ~has_time, "_id"])
    frame = frame.loc[has_session & has_time].copy()
    intent_ok = frame["intent"].map(lambda v: v is None or (isinstance(v, str)) or pd.isna(v))
    dq.note("intents_of_wrong_type", frame.loc[~intent_ok, "_id"])
    frame["intent"] = frame["intent"].where(
        frame["intent"].map(lambda v: isinstance(v, str) and v.strip() != ""), None
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def _text(value: object) -> str:
    if value is None or (not isinstance(value, str | list) and pd.isna(value)):
        return ""
    return str(value).strip()


def _config(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value if _text(v))
    return _text(value)


def profiles(users: pd.DataFrame, user_ids: Iterable[str], dq: DataQuality) -> pd.DataFrame:
    """Display fields per user id; ids missing from ``users`` get blank fields (and a count)."""
    wanted = pd.Index(sorted(set(user_ids)), name="user_id")
    known = users.drop_duplicates(subset="user_id").set_index("user_id").reindex(wanted)
    dq.note("unknown_users", wanted[~wanted.isin(users["user_id"])])
    in_users = wanted.isin(users["user_id"])

    names = known["name"].map(_text)
    dq.note("missing_names", wanted[in_users & (names == "").to_numpy()])

    raw_mobiles = known["mobile"].map(_text)
    e164 = raw_mobiles.map(to_e164)
    dq.note("invalid_mobiles", wanted[in_users & e164.isna().to_numpy()])

    rank = known["ranking"].map(_text)
    dq.note("nonstandard_rankings", wanted[in_users & ~rank.isin(STANDARD_RANKINGS).to_numpy()])

    scheduled = (known["site_visit_status"].map(_text) == "scheduled") & known[
        "site_visit_scheduled_at"
    ].notna()
    return pd.DataFrame(
        {
            "Name": names,
            "Mobile": e164.fillna(raw_mobiles),
            "Config": known["preferred_configuration"].map(_config),
            "Rank": rank,
            "Visit Scheduled": scheduled.map({True: "Yes", False: "No"}),
        },
        index=wanted,
    )


def _dominant_intent(frame: pd.DataFrame) -> pd.Series:
    """Most frequent non-null intent per session; a tie goes to the intent seen most recently."""
    with_intent = frame.dropna(subset=["intent"])
    if with_intent.empty:
        return pd.Series(dtype="object")
    ranked = (
        with_intent.groupby(["session_id", "intent"])
        .agg(count=("intent", "size"), last_seen=("timestamp", "max"))
        .reset_index()
        .sort_values(["session_id", "count", "last_seen"], ascending=[True, False, False])
    )
    return ranked.drop_duplicates("session_id").set_index("session_id")["intent"]


def session_report(
    interactions: pd.DataFrame, users: pd.DataFrame, touched_sessions: Iterable[str]
) -> tuple[pd.DataFrame, DataQuality]:
    """One row per touched session, computed from all of the session's interactions."""
    dq = DataQuality()
    frame = placeable_interactions(interactions, dq)
    frame = frame[frame["session_id"].isin(set(touched_sessions))].sort_values(["timestamp", "_id"])
    if frame.empty:
        return pd.DataFrame(columns=SESSION_COLUMNS), dq
    by_session = frame.groupby("session_id")
    stats = by_session.agg(start=("timestamp", "min"), end=("timestamp", "max"), messages=("_id", "size"))
    # A session belongs to the user of its first interaction that names one.
    stats["user_id"] = frame.dropna(subset=["user_id"]).groupby("session_id")["user_id"].first()
    stats["user_id"] = stats["user_id"].fillna("")
    stats["intent"] = _dominant_intent(frame)
    people = profiles(users, stats["user_id"][stats["user_id"] != ""], dq)
    people.loc[""] = ["", "", "", "", ""]
    person = people.reindex(stats["user_id"])
    report = pd.DataFrame(
        {
            "Session ID": stats.index,
            "Name": person["Name"].to_numpy(),
            "Mobile": person["Mobile"].to_numpy(),
            "Session Start": stats["start"].to_numpy(),
            "Session End": stats["end"].to_numpy(),
            "Chat Length (min)": ((stats["end"] - stats["start"]).dt.total_seconds() // 60).astype("int64"),
            "Messages": stats["messages"].astype("int64").to_numpy(),
            "Intent Detected": stats["intent"].fillna("").to_numpy(),
            "User ID": stats["user_id"].to_numpy(),
        }
    )
    report = report.sort_values(["Session Start", "Session ID"]).reset_index(drop=True)
    return report[SESSION_COLUMNS], dq


def consolidated_report(
    interactions: pd.DataFrame, users: pd.DataFrame, touched_users: Iterable[str]
) -> tuple[pd.DataFrame, DataQuality]:
    """One row per touched user, computed from all of the user's interactions."""
    dq = DataQuality()
    frame = placeable_interactions(interactions, dq)
    touched = sorted(set(touched_users))
    frame = frame[frame["user_id"].isin(touched)]
    if not touched:
        return pd.DataFrame(columns=CONSOLIDATED_COLUMNS), dq
    stats = (
        frame.groupby("user_id")
        .agg(
            sessions=("session_id", "nunique"),
            messages=("_id", "size"),
            first=("timestamp", "min"),
            last=("timestamp", "max"),
        )
        .reindex(pd.Index(touched, name="user_id"))
    )
    people = profiles(users, touched, dq)
    visit_status = users.drop_duplicates(subset="user_id").set_index("user_id")["site_visit_status"]
    messages = stats["messages"].fillna(0).astype("int64")
    report = pd.DataFrame(
        {
            "User ID": stats.index,
            "Name": people["Name"].to_numpy(),
            "Mobile": people["Mobile"].to_numpy(),
            "Config": people["Config"].to_numpy(),
            "Rank": people["Rank"].to_numpy(),
            "Chat History": (messages > 0).map({True: "Yes", False: "No"}).to_numpy(),
            "Visit Scheduled": people["Visit Scheduled"].to_numpy(),
            "Sessions": stats["sessions"].fillna(0).astype("int64").to_numpy(),
            "Messages": messages.to_numpy(),
            "First Interaction": stats["first"].to_numpy(),
            "Last Interaction": stats["last"].to_numpy(),
            "Visit Status": visit_status.reindex(stats.index).map(_text).to_numpy(),
        }
    )
    report = report.sort_values(["Last Interaction", "User ID"], ascending=[False, True])
    return report.reset_index(drop=True)[CONSOLIDATED_COLUMNS], dq


def stamped(report: pd.DataFrame, read_at: datetime, dq: DataQuality, key: str) -> pd.DataFrame:
    """The report with its ``Updated`` column, text cut to what one Sheets cell holds (counted)."""
    report = report.copy()
    for column in report.columns:
        if report[column].dtype != object and not pd.api.types.is_string_dtype(report[column]):
            continue
        long = report[column].map(lambda v: isinstance(v, str) and len(v) > MAX_CELL_CHARS)
        if long.any():
            dq.note("cells_truncated", report.loc[long, key])
            report.loc[long, column] = report.loc[long, column].str.slice(0, MAX_CELL_CHARS)
    report[UPDATED] = pd.Series([pd.Timestamp(read_at)] * len(report), index=report.index, dtype="datetime64[us, UTC]")
    return report
