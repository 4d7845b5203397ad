#!/usr/bin/env bash
# One-shot `airflow-init` service: migrate the metadata DB, then load airflow_settings.yaml
# (connections, Variables, pools) rewritten for the compose service names (apply_settings.py).
set -euo pipefail
airflow db migrate
python /opt/leadflow-docker/apply_settings.py
