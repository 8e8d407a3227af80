# Two entry points: `make demo` (the main job on simulated devices) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
OUT    ?= runs/demo

# Real image data for tests and benchmarks: ../shared/data when it exists.
ifneq ($(wildcard ../shared/data),)
export HIL_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: demo test test-e2e test-all test-fast install install-test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	touch $@

# The tests install the [ray] extra too (CI runs the Ray executor's test; Ray's wheel
# pulls no torch, ~10 s), so the test target installs both extras.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[test,ray]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/hil demo --out $(OUT)

# The tests run in parallel, one pytest-xdist worker per core; a test module is one unit
# of work, given to the next free worker, the heaviest first (tests/conftest.py
# HEAVY_FIRST); `make test XDIST=` runs them in one process.
XDIST ?= -n auto --dist loadscope --no-loadscope-reorder

# `make test`: every test but the end-to-end runs (marked e2e: the walk-through notebook,
# the main job, the shipped benches calibrated at full size); `make test-e2e` runs those
# (CI runs both); `make test-all` everything at once.
test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -m "not e2e" $(XDIST)

test-e2e: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -m e2e $(XDIST)

test-all: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q $(XDIST)

# the edit loop: no slow test (full calibrations, large fits) and no end-to-end run
test-fast: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -m "not slow and not e2e" $(XDIST)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(VENV)/bin/hil bench --out runs/bench

clean:
	rm -rf $(VENV) runs build *.egg-info
