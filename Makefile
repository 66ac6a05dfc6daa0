# Two commands on a fresh machine: `make run` and `make test` (each sets up .venv when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# No telemetry, no MLflow job runners (about 2.6 GB of processes the UI does not need), and
# matplotlib's cache in the project rather than the home folder.
PROJECT_ENV := env MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MPLCONFIGDIR=$(CURDIR)/.cache/matplotlib

.PHONY: run test lint format kenlm server serve ui clean pg-start pg-server pg-ui pg-serve pg-stop

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(INSTALLED)  ## the whole pipeline on the bundled corpus; prints the comparison table
	$(PROJECT_ENV) $(BIN)/seqlm run

test: $(INSTALLED) lint  ## lint, format check, then the test suite
	$(BIN)/pytest

kenlm: $(INSTALLED)  ## the kenlm package (built from source), for the ARPA agreement test
	$(BIN)/python -c "import kenlm" 2>/dev/null || $(BIN)/pip install --quiet kenlm

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

server: $(INSTALLED)  ## a Prefect server for deployments and schedules (UI: http://127.0.0.1:4200)
	$(PROJECT_ENV) $(BIN)/prefect server start --host 127.0.0.1

serve: $(INSTALLED)  ## serve corpus-to-model/on-demand and /nightly to that server
	$(PROJECT_ENV) $(BIN)/seqlm serve

ui: $(INSTALLED)  ## the MLflow UI on http://127.0.0.1:5000
	$(PROJECT_ENV) $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

# The service on PostgreSQL (flows/postgres.py): a cluster in .pg/ on 127.0.0.1:$(PG_PORT), then
# each server in a terminal of its own. Clients: PREFECT_API_URL and MLFLOW_TRACKING_URI below.
PG_PORT ?= 5433
PG := --folder .pg --port $(PG_PORT)
PG_CLIENTS := PREFECT_API_URL=http://127.0.0.1:4200/api MLFLOW_TRACKING_URI=http://127.0.0.1:5000

pg-start: $(INSTALLED)  ## PostgreSQL in .pg/ (created on first use) with the prefect and mlflow databases
	$(PROJECT_ENV) $(BIN)/seqlm service start $(PG)

pg-server: $(INSTALLED)  ## the Prefect server on PostgreSQL (UI: http://127.0.0.1:4200)
	$(PROJECT_ENV) $(BIN)/seqlm service prefect $(PG)

pg-ui: $(INSTALLED)  ## the MLflow tracking server on PostgreSQL (UI: http://127.0.0.1:5000; artifacts in mlruns/artifacts)
	$(PROJECT_ENV) $(BIN)/seqlm service mlflow $(PG)

pg-serve: $(INSTALLED)  ## seqlm serve against those two servers
	$(PROJECT_ENV) $(PG_CLIENTS) $(BIN)/seqlm serve

pg-stop:  ## stop PostgreSQL (the servers stop with Ctrl-C in their terminals)
	$(PROJECT_ENV) $(BIN)/seqlm service stop $(PG)

clean:  ## the artifact store, MLflow runs and Prefect's local database (not .venv)
	rm -rf data/store .prefect .cache mlruns/mlflow.db mlruns/[0-9]* mlartifacts
