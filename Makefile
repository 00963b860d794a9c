# The two entry points of the README: `make bench` (the quick benchmark) and
# `make test` (lint + tests). Each creates .venv on first use and installs what
# the project needs; torch is pinned to the CPU build that lies on the machine's disk.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: setup test lint bench browser engine-bench clean

setup: $(STAMP)

# What `bptt bench` needs.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[vowels]"
	touch $(STAMP)

# What the tests need beside: pytest, ruff, mypy, ReservoirPy, Ray, Playwright's client,
# Triton (the gpu extra: its interpreter runs the Triton kernels' tests on the CPU; on
# Linux x86-64 only, elsewhere those tests skip and say so),
# and timm, whose timm/utils/agc.py is the AGC reference (the tests load that one file).
# timm goes in without its dependencies: its torchvision would replace the CPU torch above.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,vowels,gpu]"
	$(BIN)/python -m pip install --quiet --no-deps timm==1.0.31
	touch $(DEV_STAMP)

# Debian's Chromium for the report's browser test (Playwright drives it; its own
# browser download is not reachable from here). Without it the test skips and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: Chromium could not be installed; the browser test will skip"

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy
	$(BIN)/mypy --strict src/bptt/run/training  # the config, the run records, the loop

test: lint browser
	$(BIN)/python -m pytest -n auto --dist worksteal

bench: $(STAMP)
	$(BIN)/bptt bench

engine-bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
