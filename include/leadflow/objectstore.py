"""Intermediate data between tasks, on an object store (S3 on MWAA, a local folder by default).

On MWAA tasks run on different Celery workers, so frames never pass through local files or
process memory: each run writes under ``<base>/<dag_id>/<run_id>/``, a retry or rerun overwrites
its own objects, and the run's last task removes the folder. XCom carries only the paths.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import ObjectStoragePath

from leadflow.config import AWS_CONN_ID, DEFAULT_OBJECT_STORE_BASE, VAR_OBJECT_STORE_BASE

if TYPE_CHECKING:  # pandas only where frames are read: the clean-up task needs none of it
    import pandas as pd

SLICE_ROWS = 20_000


def run_folder(dag_id: str, run_id: str, base: str | None = None) -> ObjectStoragePath:
    if base is None:
        from airflow.sdk import Variable

        base = Variable.get(VAR_OBJECT_STORE_BASE, default=DEFAULT_OBJECT_STORE_BASE)
    # conn_id only matters for s3://; run ids contain ':' and '+', which S3 keys tolerate
    # but a local path should not carry unescaped.
    root = ObjectStoragePath(base, conn_id=AWS_CONN_ID if base.startswith("s3://") else None)
    folder = root / dag_id / quote(run_id, safe="")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _path(url: str) -> ObjectStoragePath:
    return ObjectStoragePath(url, conn_id=AWS_CONN_ID if url.startswith("s3://") else None)


# JSON lines rather than Parquet: raw Mongo fields are of mixed types (an intent of 7, a list or
# a str configuration), which the transforms must see as they are to count them; Parquet would
# force one type per column.
def write_frame(frame: pd.DataFrame, path: ObjectStoragePath) -> str:
    # Streamed slice by slice: a whole frame's JSON text would cost several times the frame.
    with path.open("wb") as handle, gzip.open(handle, "wt", compresslevel=3, encoding="utf-8") as text:
        for start in range(0, len(frame), SLICE_ROWS):
            part = frame.iloc[start : start + SLICE_ROWS]
            text.write(part.to_json(orient="records", lines=True, date_format="iso", date_unit="us"))
    return str(path)


def read_frame(url: str, datetime_columns: Iterable[str] = (), columns: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd

    with _path(url).open("rb") as handle, gzip.open(handle, "rt", encoding="utf-8") as text:
        if not text.read(1):
            return pd.DataFrame(columns=columns or [])
    with _path(url).open("rb") as handle, gzip.open(handle, "rt", encoding="utf-8") as text:
        reader = pd.read_json(text, lines=True, dtype=False, convert_dates=False, chunksize=SLICE_ROWS)
        frame = pd.concat(list(reader), ignore_index=True)
    for column in datetime_columns:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def remove_folder(folder: str) -> None:
    path = _path(folder)
    if path.exists():
        path.rmdir(recursive=True)
