# The README's two commands: `make lab` starts the lab and JupyterLab on notebooks/, `make test` runs every test.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meshlab-installed
# Notebooks are tests: nbval runs each one and compares the outputs of cells marked NBVAL_CHECK_OUTPUT.
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg

.PHONY: lab test lint typecheck unit notebooks bench down clean

# One environment for both commands: the tests start JupyterLab too (`meshlab lab` is tested).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lab]'
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/meshlab lab

down: $(STAMP)
	$(VENV)/bin/meshlab cluster down

lint: $(STAMP)
	$(VENV)/bin/ruff check meshlab tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

notebooks: $(STAMP)
	$(PY) -m pytest -q $(NBVAL) tests/notebooks notebooks

test: lint typecheck unit notebooks

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
