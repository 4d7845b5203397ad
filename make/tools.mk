# System tools the test suite needs beyond the venv. Include from the Makefile with
#   include make/tools.mk
# `make tools` installs what is missing (Debian/Ubuntu, as root or with sudo); `make test` runs it
# first, so `.ci/run` on a fresh machine gets them. Tests fail (not skip) when a tool is missing.
#
#   docker-compose   Debian's docker-compose (1.29.2): tests/deploy/test_compose.py validates
#                    docker-compose.yaml with `docker-compose config -q`. Only the parser is used;
#                    no Docker daemon is needed.

.PHONY: tools

APT_GET := $(shell command -v apt-get 2>/dev/null)
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)

tools:
	@set -euo pipefail; \
	if command -v docker-compose >/dev/null 2>&1; then exit 0; fi; \
	if [ -z "$(APT_GET)" ]; then \
	  echo "docker-compose is missing and apt-get is not available: install docker-compose 1.29+ yourself" >&2; \
	  exit 0; \
	fi; \
	echo "installing docker-compose (apt)"; \
	$(SUDO) apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	docker-compose version --short

# Extra prerequisite of the existing test target (its recipe stays in the Makefile).
test: tools
