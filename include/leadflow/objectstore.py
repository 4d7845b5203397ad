"""Intermediate data between tasks, on an object store (S3 on MWAA, a local folder by default).

On MWAA tasks run on different Celery workers, so frames never pass through local files or
process memory: each run writes under ``<base>/<dag_id>/<run_id>/``, a retry or rerun overwrites
its own objects, and the run's last task removes the folder. XCom carries only the paths.
"""

from __future__ import annotations

import json
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


# Parquet, so a task reads typed columns in a fraction of the time JSON text takes (at 1 M
# interactions, 265 k rows: 12.4 s of JSON lines writes and reads per run; python -m bench.reports).
# Raw Mongo fields can hold mixed types (an intent of 7, a list or a str configuration), which the
# transforms must see as they are to count them, and Parquet keeps one type per column: such a
# column is stored as the JSON text of each value and decoded on read, so it comes back as stored.
JSON_COLUMNS_KEY = b"leadflow.json_columns"


def _holds_only_text(column: pd.Series) -> bool:
    return bool(column.map(lambda v: v is None or isinstance(v, str) or v != v).all())


def write_frame(frame: pd.DataFrame, path: ObjectStoragePath) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    mixed = [str(c) for c in frame.columns if frame[c].dtype == object and not _holds_only_text(frame[c])]
    encoded = frame.assign(**{c: frame[c].map(lambda v: json.dumps(v, default=str)) for c in mixed})
    table = pa.Table.from_pandas(encoded, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), JSON_COLUMNS_KEY: json.dumps(mixed).encode()}
    table = table.replace_schema_metadata(metadata)
    with path.open("wb") as handle:
        pq.write_table(table, handle, row_group_size=SLICE_ROWS)
    return str(path)


def read_frame(url: str, datetime_columns: Iterable[str] = (), columns: list[str] | None = None) -> pd.DataFrame:
    import pandas as pd
    import pyarrow.parquet as pq

    with _path(url).open("rb") as handle:
        table = pq.read_table(handle)
    mixed = json.loads((table.schema.metadata or {}).get(JSON_COLUMNS_KEY, b"[]"))
    # Arrow's buffers are released column by column as pandas takes them over, so a task holds
    # one copy of the frame, not two (the transform tasks' peak RSS).
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    for column in mixed:
        frame[column] = frame[column].map(json.loads).astype(object)
    if columns is not None and frame.empty:
        frame = frame.reindex(columns=list(columns))
    for column in datetime_columns:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def remove_folder(folder: str) -> None:
    path = _path(folder)
    if path.exists():
        path.rmdir(recursive=True)
