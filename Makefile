# The two commands: `make demo` and `make test`. Everything else is a building block.
#   make test   the whole quality gate, what CI runs (.ci/run): every stage below, in order,
#               stopping at the first failure; each stage prints its name and duration.
#   make check  the quick stages only (lint, typecheck, security).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAGE := scripts/stage.sh
PYTEST := $(BIN)/pytest -q
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Every stage appends "name status seconds" here; `make test` prints the table at the end.
export STAGE_LOG ?= $(CURDIR)/var/stages.log

# Stages run one after the other, in the order written, even under `make -j`.
.NOTPARALLEL:
.PHONY: demo test check venv services tools gate-start lint typecheck security unit integration \
	browser manifests alerts smoke image clean

$(BIN)/.installed: pyproject.toml constraints.txt
	scripts/ensure-tools.sh python
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

services:
	scripts/ensure-services.sh

tools:
	scripts/ensure-tools.sh promtool

demo: venv
	scripts/ensure-services.sh --binaries-only
	$(BIN)/kai-inventory demo

gate-start:
	@mkdir -p $(dir $(STAGE_LOG)) && : >$(STAGE_LOG)

lint: venv
	$(STAGE) ruff-lint $(BIN)/ruff check .
	$(STAGE) ruff-format $(BIN)/ruff format --check .

typecheck: venv
	$(STAGE) mypy $(BIN)/mypy

security: venv
	$(STAGE) bandit $(BIN)/bandit -q -c pyproject.toml -r kai_inventory

# Test stages split the suite without overlap: browser tests run only in `browser`,
# tests/integration only in `integration`, tests/delivery only in `manifests` and `alerts`.
unit: venv services
	$(STAGE) unit-tests $(PYTEST) -m "not browser" --ignore=tests/integration --ignore=tests/delivery

integration: venv services
	$(STAGE) integration-tests $(PYTEST) -m "not browser" tests/integration

browser: venv services
	@if [ -x scripts/ensure-browser.sh ]; then scripts/ensure-browser.sh; fi
	$(STAGE) --no-tests-ok browser-tests $(PYTEST) -m browser

manifests: venv
	$(STAGE) manifests $(PYTEST) -m "not browser" tests/delivery \
		--ignore=tests/delivery/test_monitoring.py

alerts: venv tools
	$(STAGE) alert-rules $(PYTEST) -m "not browser" tests/delivery/test_monitoring.py

# The container image, tagged with the package version (needs a Docker engine; not part of the gate).
IMAGE ?= kai-inventory
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -t $(IMAGE):$(VERSION) .

# Hook for the Locust smoke run: loadtests/smoke.sh owns the scenario.
smoke: venv services
	@if [ -e loadtests/smoke.sh ]; then \
		$(STAGE) locust-smoke bash loadtests/smoke.sh; \
	else \
		echo "==> stage locust-smoke: skipped: no smoke scenario yet"; \
	fi

check: lint typecheck security

test: gate-start check unit integration browser manifests alerts smoke
	@printf '\n==> quality gate passed\n'; cat $(STAGE_LOG)

clean:
	rm -rf $(VENV) build dist var/stages.log .pytest_cache .mypy_cache .ruff_cache

# Load tests (loadtests/): a headless Locust run against a private local server for a fixed
# time; CSV + HTML reports under loadtests/reports/; fails when a threshold of
# loadtests/thresholds.toml [loadtest] is missed. LOADTEST_ARGS="--users 100 --duration 120".
.PHONY: loadtest bench
loadtest: venv services
	$(BIN)/python loadtests/run.py --profile loadtest $(LOADTEST_ARGS)

# The same-run benchmark: wrk + Redis script stats; prints a table, rewrites the generated
# block of docs/PERFORMANCE.md and its chart. BENCH_ARGS="--rounds 5 --duration 10 --no-profile".
bench: venv services
	$(BIN)/python loadtests/bench.py $(BENCH_ARGS)

# Fault injection (tests/faults, docs/RELIABILITY.md). `make test` runs the bounded form in its
# unit stage; `make chaos` runs the long form (every fault with a longer, busier workload) and
# rewrites the results table of docs/RELIABILITY.md from artifacts/faults/summary.jsonl.
.PHONY: chaos
chaos: venv services
	CHAOS_LONG=1 $(PYTEST) tests/faults --timeout 900
	$(BIN)/python -m tests.faults.report --write docs/RELIABILITY.md
