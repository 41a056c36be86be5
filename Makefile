# stationflow: `make demo` runs the whole system here, `make test` runs the tests.
# Both install what they need into .venv first (pinned by constraints.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install demo stop test test-fast lint db-up constraints clean

help:
	@echo "make demo         set up .venv, start PostgreSQL + Airflow, print the UI address"
	@echo "make stop         stop what the demo started"
	@echo "make test         install and run lint + the whole test suite"
	@echo "make test-fast    tests without the Airflow metadata database (no DAG runs)"
	@echo "make lint         ruff"
	@echo "make db-up        start the embedded PostgreSQL and apply migrations"
	@echo "make constraints  re-resolve requirements*.txt into constraints.txt (fresh venv)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins or the packaging change. The STA test/demo server
# (django-ogc-sensorthings) pins its own Django, so it gets a venv of its own, .venv-sta,
# built from requirements-sta.txt; ensure_venv() is a no-op while its sha256 stamp matches.
$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt constraints.txt pyproject.toml \
		requirements-sta.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -c "from stationflow.sim.sta_server import ensure_venv; ensure_venv()"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stationflow demo

stop:
	@if [ -x $(BIN)/stationflow ]; then $(BIN)/stationflow stop; else echo "nothing to stop"; fi

db-up: $(STAMP)
	$(BIN)/stationflow db up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) lint
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not airflow"

# A clean resolution of the direct dependencies, frozen. Review the diff before committing.
constraints:
	rm -rf .venv-freeze
	$(PYTHON) -m venv .venv-freeze
	.venv-freeze/bin/pip install --quiet --upgrade pip
	.venv-freeze/bin/pip install --quiet -r requirements-dev.txt
	( echo "# pip freeze of a clean install of requirements-dev.txt (Python 3.11, Linux x86_64)."; \
	  echo "# Regenerate with: make constraints"; \
	  .venv-freeze/bin/pip freeze --exclude-editable ) > constraints.txt
	rm -rf .venv-freeze

clean:
	rm -rf $(VENV) .venv-sta build dist include/*.egg-info .pytest_cache .ruff_cache
