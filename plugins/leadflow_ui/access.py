"""Who may see the view: decided by Airflow's configured auth manager, never here.

The user comes from Airflow's own ``get_user`` (the UI's JWT cookie or a bearer token: anonymous →
401) and each check is Airflow's ``requires_access_dag``, so the answer is whatever the auth manager
says: FAB roles on MWAA, the simple auth manager's roles locally. The page aggregates every
leadflow DAG, so it needs read access to the runs and XCom of each of them (→ 403 otherwise); a
run's Summary tab needs it for that run's DAG only.
"""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, HTTPException, Request, status

from leadflow_ui.airflow_state import leadflow_dag_ids

# What the view reads of a DAG: its runs and the tasks' return values.
READ_ENTITIES = (DagAccessEntity.RUN, DagAccessEntity.XCOM)


def _check(request: Request, user: GetUserDep, dag_id: str | None) -> None:
    for entity in READ_ENTITIES:
        requires_access_dag("GET", entity, param_dag_id=dag_id)(request, user)


def readable_leadflow_dags(request: Request, user: GetUserDep, session: SessionDep) -> list[str]:
    """The leadflow DAG ids, once the user is allowed to read all of them."""
    dag_ids = leadflow_dag_ids(session)
    # No DAG parsed yet: ask about DAGs in general, so an empty list is no way around the check.
    for dag_id in dag_ids or [None]:
        _check(request, user, dag_id)
    return dag_ids


def readable_leadflow_dag(dag_id: str, request: Request, user: GetUserDep, session: SessionDep) -> str:
    """The path's ``dag_id``, once the user may read it; 404 for a DAG that is not leadflow's."""
    _check(request, user, dag_id)
    if dag_id not in leadflow_dag_ids(session):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{dag_id} is not a leadflow DAG")
    return dag_id


LeadflowDags = Annotated[list[str], Depends(readable_leadflow_dags)]
LeadflowDag = Annotated[str, Depends(readable_leadflow_dag)]
