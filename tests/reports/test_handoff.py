"""The frames tasks hand each other keep what MongoDB stored, mixed types included."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from airflow.sdk import ObjectStoragePath

from leadflow.objectstore import read_frame, write_frame


def test_mixed_type_columns_come_back_as_stored(tmp_path) -> None:
    stamp = datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    frame = pd.DataFrame(
        {
            "_id": ["a", "b", "c"],
            "session_id": ["S1", 5, None],  # a session id stored as a number
            "timestamp": pd.to_datetime([stamp, None, stamp], utc=True),
            "intent": [None, 7, "site_visit"],  # an intent of the wrong type is counted, not lost
            "preferred_configuration": [["2BHK", "3BHK"], "3BHK", None],
            "messages": [1, 2, 3],
        }
    ).astype({"session_id": object, "intent": object, "preferred_configuration": object})
    path = write_frame(frame, ObjectStoragePath(f"file://{tmp_path}/frame.parquet"))

    back = read_frame(path, ["timestamp"], list(frame.columns))

    assert back["session_id"].tolist() == ["S1", 5, None]
    assert back["intent"].tolist() == [None, 7, "site_visit"]
    assert back["preferred_configuration"].tolist() == [["2BHK", "3BHK"], "3BHK", None]
    assert back["timestamp"].tolist()[0] == stamp
    assert pd.isna(back["timestamp"].tolist()[1])
    assert back["messages"].tolist() == [1, 2, 3]


def test_an_empty_frame_keeps_its_columns(tmp_path) -> None:
    path = write_frame(pd.DataFrame(columns=["user_id"]), ObjectStoragePath(f"file://{tmp_path}/empty.parquet"))
    assert read_frame(path, columns=["user_id"]).columns.tolist() == ["user_id"]
