"""The Leadflow plugin: the data team's page in the Airflow UI nav and a "Summary" tab on every run.

A FastAPI app (server-rendered HTML, no JavaScript build) plus two ``external_views``; not a React
app, because a React plugin needs a JS bundle built and served next to it, which MWAA's
``plugins.zip`` does not build and ``make run`` would need node for. The views are iframes of
the FastAPI app, so they work the same in ``make run``, the topology test and MWAA.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from leadflow_ui.app import URL_PREFIX, app


class LeadflowPlugin(AirflowPlugin):
    name = "leadflow"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [{"app": app, "url_prefix": URL_PREFIX, "name": "Leadflow"}]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Leadflow",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "leadflow",
            "nav_top_level": True,
        },
        {
            # The UI fills in {DAG_ID} and {RUN_ID} for the run being looked at.
            "name": "Summary",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "leadflow-summary",
        },
    ]
