# Two commands do all the set-up:  `make run`  and  `make test`.
# The virtual environment is built from the lock file the first time either runs.
# GPU machines: `make run LOCK=requirements-gpu.lock` (CUDA TensorFlow instead of tensorflow-cpu).

PYTHON ?= python3.11
LOCK   ?= requirements.lock
VENV   ?= .venv
BIN    := $(VENV)/bin

# The servers a team shares (README: "Servers: MLflow on PostgreSQL, Prefect, login"). Each runs in the
# foreground until Ctrl-C, on 127.0.0.1 unless told otherwise: `make mlflow-server MLFLOW_PORT=5050`.
# The local PostgreSQL cluster (.ci/postgres): its port, database and folder (empty: the script's default).
POSTGRES_PORT ?= 5433
POSTGRES_DB   ?= mlflow
POSTGRES_DATA ?=
# `+psycopg2`: SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3, which the lock does not pin.
POSTGRES_DSN  := postgresql+psycopg2://postgres@127.0.0.1:$(POSTGRES_PORT)/$(POSTGRES_DB)
PG            := POSTGRES_PORT=$(POSTGRES_PORT) POSTGRES_DB=$(POSTGRES_DB) POSTGRES_DATA='$(POSTGRES_DATA)' bash .ci/postgres
MLFLOW_HOST   ?= 127.0.0.1
MLFLOW_PORT   ?= 5000
MLFLOW_BACKEND_URI ?= $(POSTGRES_DSN)
MLFLOW_ARTIFACTS_DESTINATION ?= $(CURDIR)/mlartifacts-server
MLFLOW_ARGS   ?=
PREFECT_HOST  ?= 127.0.0.1
PREFECT_PORT  ?= 4200
# `make test` runs the test modules on one pytest-xdist worker per CPU core, each module whole on one
# worker (`TEST_WORKERS=0`: all in one process). A test mostly drives one subprocess at a time (dvc,
# mlflow, prefect, a stage), so two tests share two cores: about 1.3x faster here than one worker.
TEST_WORKERS  ?= auto

.PHONY: run test venv clean-venv postgres postgres-stop mlflow-server prefect-server

# The stamp records which lock the environment was built from; a changed lock rebuilds it.
$(VENV)/.installed: $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

run: venv
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/resnet-mlops run

test: venv
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# A local PostgreSQL cluster on 127.0.0.1:$(POSTGRES_PORT), created and started unless it runs, with the
# database $(POSTGRES_DB) (created if missing); prints its DSN. `make postgres-stop` stops it.
postgres:
	@$(PG) start

postgres-stop:
	@$(PG) stop

# MLflow's tracking server and model registry, its store on PostgreSQL (the local cluster, started
# first, unless MLFLOW_BACKEND_URI names another), the artifacts uploaded through the server into
# MLFLOW_ARTIFACTS_DESTINATION (a folder; or an object store URI, its client library installed). MLFLOW_ARGS: e.g.
# MLFLOW_ARGS="--app-name basic-auth" for the login. The command is not echoed: the URI may hold a password.
mlflow-server: venv
	@if [ '$(MLFLOW_BACKEND_URI)' = '$(POSTGRES_DSN)' ]; then $(PG) start >/dev/null; fi
	@echo "mlflow server on http://$(MLFLOW_HOST):$(MLFLOW_PORT), artifacts in $(MLFLOW_ARTIFACTS_DESTINATION)"
	@$(BIN)/mlflow server --backend-store-uri '$(MLFLOW_BACKEND_URI)' \
		--artifacts-destination '$(MLFLOW_ARTIFACTS_DESTINATION)' \
		--host $(MLFLOW_HOST) --port $(MLFLOW_PORT) $(MLFLOW_ARGS)

# Prefect's API and UI (flows report there with PREFECT_API_URL=http://$(PREFECT_HOST):$(PREFECT_PORT)/api).
# Its database: SQLite under ~/.prefect, or PostgreSQL with
# PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:5433/prefect in the environment.
prefect-server: venv
	$(BIN)/prefect server start --host $(PREFECT_HOST) --port $(PREFECT_PORT)
