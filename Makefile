# leadflow: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.leadflow-installed
STATE := .local
UV_VERSION := 0.12.3
# Containers often set PYTHONDONTWRITEBYTECODE=1, and uv installs no bytecode: then every
# process compiles every module it imports from source, each time (importing the report
# pipeline: 3.3 s instead of 0.9 s here), and the tests and the topology start hundreds of them.
# Ours write their bytecode caches (__pycache__, ignored by git and the MWAA bundle).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install run demo test local-scheduler chaos lint sheets outbox bench lock mwaa-bundle clean

install: $(STAMP)

# Re-installs only when a requirements or constraints file changed (otherwise a no-op).
$(STAMP): requirements.txt requirements-dev.txt constraints.txt scripts/find-python312.sh
	@set -euo pipefail; \
	py312=$$(scripts/find-python312.sh); \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
	  rm -rf $(VENV); echo "creating $(VENV) with $$py312"; $$py312 -m venv $(VENV); \
	fi; \
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); \
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.txt -c constraints.txt; \
	site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	printf '%s\n%s\n' "$(CURDIR)/include" "$(CURDIR)" > "$$site/leadflow-dev.pth"; \
	touch $(STAMP); echo "installed the pinned stack into $(VENV)"

run: install
	$(PY) -m devstack.run --state-dir $(STATE)

demo: install
	$(PY) -m devstack.demo

# Two passes: the tests that run DAGs in-process on two workers, then (alone on the machine,
# so their timeouts mean something) the ones that start real Airflow components, the MWAA
# topology among them: marker `slow`.
test: install lint
	@rc=0; \
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" || rc=$$?; \
	$(PY) -m pytest -m "slow and not local_scheduler and not chaos" || rc=$$?; \
	exit $$rc

# On demand: the backfill and freshness checks on make run's shape (SQLite, LocalExecutor, one
# scheduler, two triggerers); make test checks the same on MWAA's shape (tests/topology).
local-scheduler: install
	$(PY) -m pytest -m local_scheduler

# On demand: MWAA's own faults (workers, schedulers, triggerers, Postgres, Redis killed; WhatsApp
# and MongoDB unreachable) during a follow-up burst and a report backfill on the topology stack,
# one seed after another; a failing seed is printed for replay. About 14 minutes a seed here.
#   make chaos                    one random seed
#   make chaos SEEDS="1 2 3 4 5"  these seeds, stopping at the first failure (or CHAOS_SEED=3 make chaos)
#   CHAOS_FAULTS=kill_process_messages,mongo_unreachable make chaos SEEDS=3   only those faults of the plan
SEEDS ?= $(or $(CHAOS_SEED),random)
chaos: install
	@set -uo pipefail; for seed in $(SEEDS); do \
	  if [ "$$seed" = random ]; then seed=$$((RANDOM * 32768 + RANDOM)); fi; \
	  echo "== make chaos: seed $$seed"; \
	  $(PY) -m pytest -m chaos tests/chaos -s --seed "$$seed" \
	    || { echo "make chaos: seed $$seed FAILED (replay: make chaos SEEDS=$$seed)"; exit 1; }; \
	done

lint: install
	$(VENV)/bin/ruff check .

sheets:
	$(PY) -m devstack.sheets_server dump --data-dir $(STATE)/stack/sheets
	$(PY) -m devstack.sheets_view --data-dir $(STATE)/stack/sheets

outbox:
	$(PY) -m devstack.whatsapp_server outbox --data-dir $(STATE)/stack/whatsapp

bench: install
	$(PY) -m bench.reports
	$(PY) -m bench.followups
	$(PY) -m bench.followups_e2e
	$(PY) -m bench.reminders
	$(PY) -m bench.sheets
	$(PY) -m bench.parse_time
	$(PY) -m bench.plugin_page

# Recompute the "leadflow additions" section of constraints.txt after editing requirements*.txt.
lock: install
	$(PY) scripts/lock.py

mwaa-bundle: install
	$(PY) scripts/mwaa_bundle.py --out dist/mwaa $(MWAA_BUNDLE_FLAGS)

clean:
	rm -rf $(STATE) dist
include make/tools.mk
include make/mwaa.mk
