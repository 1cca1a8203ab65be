# Two commands: `make run` (the main job) and `make test` (the suite).
# Each creates or reuses .venv and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `run` installs what the main job needs (the core and matplotlib for report.html); `test` adds
# the test extra, and Chromium (scripts/ensure-chromium) for the report's browser test.
CORE   := $(VENV)/.installed-core
TESTS  := $(VENV)/.installed-test
# PYTHONWARNINGS: setuptools prints an informational notice ("be careful with folders named
# like your package") on every editable install of a flat layout; it is about editable
# installs in general, not this package, and would be the only output of a clean install.
PIP    := PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test test-fast lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "startline needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(CORE): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[plot]'
	@touch $(CORE)

$(TESTS): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	@touch $(CORE) $(TESTS)

run: $(CORE)
	$(BIN)/startline run examples/quickstart.toml --out out/quickstart --overwrite

# Three pytest processes (pytest-xdist) on two cores: most live tests wait on real time (a run's
# start lead, worker processes starting, servers), so a third overlaps those waits — 536 s against
# 617 s for two on this project's 2-core VM (2026-12-03), no test judged by wall time.
test: $(TESTS)
	scripts/ensure-chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 3 --dist worksteal

# Only the quick tests on virtual time (no process, server or browser: not `live`; not the `slow`
# sweeps of many simulated runs), a few hypothesis examples each: a look while working, under a
# minute. `make test` runs everything.
test-fast: $(TESTS)
	$(BIN)/python -m pytest -q -m "not live and not slow" --hypothesis-profile=fast

bench: $(TESTS)
	$(BIN)/python benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
