"""leadflow: the logic behind the leadflow Airflow DAGs (reports and WhatsApp follow-ups).

Everything here is plain, typed Python that the thin files in ``dags/`` call from inside tasks.
It travels inside the dags folder on MWAA, so it must never import the dev-only ``devstack``.
"""
