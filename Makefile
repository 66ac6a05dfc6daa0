# Two commands on a fresh machine: `make run` and `make test` (each sets up .venv when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(INSTALLED)  ## the whole pipeline on the bundled corpus; prints the comparison table
	$(BIN)/seqlm run

test: $(INSTALLED) lint  ## lint, format check, then the test suite
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## the artifact store, MLflow runs and Prefect's local database (not .venv)
	rm -rf data/store .prefect mlruns/mlflow.db mlruns/[0-9]* mlartifacts
