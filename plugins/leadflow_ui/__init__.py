"""The data team's Leadflow view inside the Airflow UI (served by ``leadflow_plugin``).

* :mod:`.app`          the FastAPI app: the Leadflow page, a run's Summary tab, their JSON.
* :mod:`.access`       who may see it: Airflow's auth manager, read access to the leadflow DAGs.
* :mod:`.ledger_stats` follow-up numbers per IST day from MongoDB (ledger, plans, token budget).
* :mod:`.airflow_state` runs, report freshness per hour and run summaries from the metadata DB.
* :mod:`.redact`       what may be shown: no message text, no phone number beyond 4 digits.

Read-only: nothing here writes; the page's redrive form posts to Airflow's own REST API with
the signed-in user's permissions.
"""
