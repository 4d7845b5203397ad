# MWAA deployment checks (on demand, not part of `make test`). Included from the Makefile.
#
#   make mwaa-bundle [OFFLINE=1] [FULL_GOOGLE=1]
#       dist/mwaa: the bundle. By default the google provider is the slim wheel (only what the
#       Sheets/Drive path and the connection form need, in plugins.zip); FULL_GOOGLE=1 lists the
#       stock provider instead. OFFLINE=1 puts every added wheel into plugins.zip and writes
#       requirements.txt with --no-index --find-links /usr/local/airflow/plugins.
#   make mwaa-check [OFFLINE=1]
#       Builds the stock bundle and the slim one, installs each with pip into a fresh MWAA-like
#       venv (Python 3.12 + the image's preinstalled packages), imports both DAGs and the task
#       code from it, prints wall time and packages added, then runs the whole test suite on the
#       slim set. OFFLINE=1 checks the offline slim bundle instead (pip with no index).

.PHONY: mwaa-check

MWAA_BUNDLE_FLAGS = $(if $(filter 1,$(FULL_GOOGLE)),,--slim-google) $(if $(filter 1,$(OFFLINE)),--offline,)

mwaa-check: install
ifeq ($(OFFLINE),1)
	$(PY) scripts/mwaa_bundle.py --out dist/mwaa-offline --slim-google --offline
	$(PY) scripts/mwaa_check.py --bundle dist/mwaa-offline --tests
else
	$(PY) scripts/mwaa_bundle.py --out dist/mwaa-full
	$(PY) scripts/mwaa_bundle.py --out dist/mwaa-slim --slim-google
	$(PY) scripts/mwaa_check.py --bundle dist/mwaa-full --bundle dist/mwaa-slim --tests
endif

# The MWAA topology end to end (Celery, Postgres, Redis, two schedulers and triggerers); on demand.
.PHONY: topology
topology: install
	$(PY) -m pytest -m topology tests/topology
