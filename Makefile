# Two commands do all the set-up:  `make run`  and  `make test`.
# The virtual environment is built from the lock file the first time either runs.
# GPU machines: `make run LOCK=requirements-gpu.lock` (CUDA TensorFlow instead of tensorflow-cpu).

PYTHON ?= python3.11
LOCK   ?= requirements.lock
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test venv clean-venv

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
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
