"""SQLAlchemy connect args for the local SQLite metadata DB.

The scheduler, api-server, dag-processor and CLI all write to one SQLite file; waiting up to
30 s for its lock beats failing with "database is locked" (the sqlite3 default waits 5 s).
Referenced by AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS in devstack.airflow_home.
"""

CONNECT_ARGS = {"timeout": 30}
