# Two commands: `make run` (the portal on the embedded local stack) and
# `make test` (the same stack on other ports, then the whole test suite).
# `make compose-test` checks docker-compose.yml (run by .ci/run after make test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test lint prepare clean-venv compose-test

$(STAMP): requirements.txt requirements-production.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m devstack run

test: $(STAMP) lint
	$(PY) -m devstack test $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

prepare: $(STAMP)
	$(PY) -m devstack prepare

# docker-compose.yml end to end (demo profile) on offline stand-ins of its images;
# see tests/compose/test_compose.py. Needs Debian's docker-compose (1.29).
compose-test: $(STAMP)
	@command -v docker-compose >/dev/null || { echo "docker-compose is missing: apt-get install docker-compose"; exit 1; }
	$(PY) -m devstack prepare
	$(PY) -m devstack.standins
	SLIPWAY_COMPOSE_TEST=1 $(PY) -m pytest -p no:cacheprovider tests/compose $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
