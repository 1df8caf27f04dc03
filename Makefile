# The README's commands: `make demo`, `make ui` and `make test`. All build .venv from the lock file.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The local SQLite Dagster instance of the demo, the UI and `dg check defs`; production keeps
# the repository's dagster.yaml (PostgreSQL).
LOCAL_HOME := $(CURDIR)/.dagster_home
# dg warns when the project's venv is not the active one; name it instead of activating it.
DG := VIRTUAL_ENV=$(CURDIR)/$(VENV) DAGSTER_HOME=$(LOCAL_HOME) $(BIN)/dg

.PHONY: demo ui test lint check-defs

$(INSTALLED): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(INSTALLED)

$(LOCAL_HOME)/dagster.yaml: $(INSTALLED)
	$(BIN)/cz-pipeline local-instance --home $(LOCAL_HOME)

demo: $(INSTALLED)
	$(BIN)/cz-pipeline demo --home $(LOCAL_HOME)

# The Dagster UI (and daemon) on the local instance; after `make demo`, its partitions begin
# where the demo's data begins (demo.env).
ui: $(LOCAL_HOME)/dagster.yaml
	set -a; if [ -f $(LOCAL_HOME)/demo.env ]; then . $(LOCAL_HOME)/demo.env; fi; set +a; \
	$(DG) dev

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-defs: $(LOCAL_HOME)/dagster.yaml
	$(DG) check defs

test: lint check-defs
	$(BIN)/pytest
