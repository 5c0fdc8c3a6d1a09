# The README's two commands: `make lab` starts the lab and JupyterLab on notebooks/, `make test` runs every test.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meshlab-installed
# Notebooks are tests: nbval runs each one and compares the outputs of cells marked NBVAL_CHECK_OUTPUT.
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg

.PHONY: system-packages lab test lint typecheck unit notebooks bench down clean

# One environment for both commands: the tests start JupyterLab too (`meshlab lab` is tested).
$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lab]'
	touch $(STAMP)

# System packages for the storage lessons: FUSE (the lab's NFS mount point), libnfs-utils (a second NFS client
# for the tests) and NFS-Ganesha (the real NFS server CI runs). Installed only where root and apt-get exist;
# elsewhere the parts that need them say what is missing and their tests skip.
SYSTEM_PACKAGES := fuse3 libnfs-utils nfs-ganesha nfs-ganesha-vfs
system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages: $$missing"; \
	    (apt-get install -y -qq --no-install-recommends $$missing || \
	     (apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing)) >/dev/null \
	    || echo "warning: could not install $$missing; the storage tests that need them will skip"; \
	  fi; \
	fi

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
