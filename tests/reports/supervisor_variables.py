"""Airflow Variables for task code called in-process, outside a task.

Inside a task, ``airflow.sdk.Variable`` reads, writes and deletes through the supervisor's channel
(``task_runner.SUPERVISOR_COMMS``) to the API server and its metadata database. Outside one there
is no channel: reads fall back to environment variables, and ``Variable.set`` / ``delete`` fail.
Code that writes Variables (the report rollover) needs the channel; this one answers the three
Variable messages from the metadata database, as the API server would, and refuses any other
message so a test cannot lean on it for more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock


class MetadataVariables:
    """The supervisor's side of GetVariable / PutVariable / DeleteVariable, on the metadata DB."""

    def send(self, message: Any) -> Any:
        from airflow.sdk.execution_time import task_runner

        # The answer comes from the supervisor's side, where there is no channel: without this,
        # airflow.models.Variable would route the call back through it.
        del task_runner.SUPERVISOR_COMMS
        try:
            return self._answer(message)
        finally:
            task_runner.SUPERVISOR_COMMS = self

    def _answer(self, message: Any) -> Any:
        from airflow.models import Variable
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import (
            DeleteVariable,
            ErrorResponse,
            GetVariable,
            MaskSecret,
            OKResponse,
            PutVariable,
            VariableResult,
        )

        match message:
            case GetVariable(key=key):
                value = Variable.get(key, default_var=None)
                if value is None:
                    return ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": key})
                return VariableResult(key=key, value=value)
            case PutVariable(key=key, value=value, description=description):
                Variable.set(key, value, description=description)
                return OKResponse(ok=True)
            case DeleteVariable(key=key):
                Variable.delete(key)
                return OKResponse(ok=True)
            case MaskSecret():  # the supervisor's log redaction: nothing to redact in-process
                return None
        raise NotImplementedError(f"{type(message).__name__} is not answered outside a task")


@contextmanager
def task_variables() -> Iterator[None]:
    """``airflow.sdk.Variable`` as inside a task: environment variables first, then the metadata DB."""
    from airflow.sdk.execution_time import task_runner

    with mock.patch.object(task_runner, "SUPERVISOR_COMMS", MetadataVariables(), create=True):
        yield
