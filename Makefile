# Two commands: `make run` (the portal on the embedded local stack) and
# `make test` (the same stack on other ports, then the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test lint prepare clean-venv

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m deploy.local run

test: $(STAMP) lint
	$(PY) -m deploy.local test $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

prepare: $(STAMP)
	$(PY) -m deploy.local prepare

clean-venv:
	rm -rf $(VENV)
