"""MongoDB access through the provider's MongoHook, with tz-aware UTC datetimes everywhere."""

from __future__ import annotations

from datetime import UTC

from bson.codec_options import CodecOptions
from pymongo.database import Database

from leadflow.config import DEFAULT_DATABASE, MONGO_CONN_ID


def get_database(conn_id: str = MONGO_CONN_ID) -> Database:
    """The connection's database (its ``schema``; ``leadflow`` if blank), decoding tz-aware UTC."""
    from airflow.providers.mongo.hooks.mongo import MongoHook

    hook = MongoHook(mongo_conn_id=conn_id)
    name = hook.connection.schema or DEFAULT_DATABASE
    return hook.get_conn().get_database(
        name, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC)
    )
