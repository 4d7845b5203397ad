"""Libraries a Celery worker imports once at start, so that each task does not import them again.

Airflow 3 runs every task in a process forked from the Celery worker. Whatever the worker has
imported, the task inherits; whatever it has not, the task imports itself, every time. Our
tasks import these lazily (the DAG files must parse in a fraction of a second), and in a fresh
process they cost several seconds of CPU per task: measured in the topology test, 8.7 s of a
write task's 12 s went to importing pandas, pymongo, s3fs and the Google client.

Enabled by ``[celery] extra_celery_config = {"imports": ["leadflow.worker_preload"]}``
(deploy/mwaa-airflow-configuration.json, devstack/topology.py): Celery imports the module in
the worker's main process, before it forks its pool.

Only third-party libraries belong here. They change only with ``requirements.txt``, which
restarts the workers; the ``leadflow`` package changes with every DAG sync, and a module
preloaded here would stay at the version the worker started with, in every task it forks.
A library that is missing is logged and skipped: a preload must never stop a worker.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

LIBRARIES = (
    # What Airflow itself imports in each task process (it changes only with the image).
    "airflow.sdk.execution_time.supervisor",
    "airflow.dag_processing.dagbag",
    "pandas",
    "pymongo",
    "requests",
    "phonenumbers",
    "openai",
    "s3fs",
    "googleapiclient.discovery",
    "airflow.providers.amazon.aws.fs.s3",
    "airflow.providers.amazon.aws.hooks.sns",
    "airflow.providers.amazon.aws.hooks.sqs",
    "airflow.providers.google.common.hooks.base_google",
    "airflow.providers.mongo.hooks.mongo",
    "airflow.providers.openai.hooks.openai",
)


def preload(names: tuple[str, ...] = LIBRARIES) -> list[str]:
    """Import ``names``; the ones that could not be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - a preload failure is never fatal
            missing.append(name)
            log.warning("worker preload: %s not imported (%s: %s)", name, type(error).__name__, error)
    return missing


MISSING = preload()
