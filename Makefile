# firm: the two commands are `make run` and `make test`; each sets up what it needs first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3
PYTEST_ARGS ?=
export FIRM_REDIS_PORT ?= 6379

.PHONY: run test test-slow test-real lint bench deps venv services molecule molecule-cluster clean help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

RUN_ARGS ?= --policies firm,hpa,aimd --seed 1 --out experiment

run: deps venv services  ## The main job: firm against HPA and AIMD on the embedded testbed, with a report (about 8 min)
	$(BIN)/firm preflight --no-pqos
	$(BIN)/firm experiment $(RUN_ARGS)

test: deps venv services lint  ## Lint, then every test that runs here but the slow suites (unit, property-based, real-kernel integration)
	$(BIN)/pytest -m "not real_resctrl and not slow" $(PYTEST_ARGS)

test-slow: deps venv services  ## The slow suites make test leaves out: the roles' molecule scenarios (about 7 min)
	$(BIN)/pytest -m "slow and not real_resctrl" $(PYTEST_ARGS)

test-real: deps venv  ## Opt-in suites against real RDT hardware or Jaeger (see README)
	$(BIN)/pytest -m real_resctrl tests/integration $(PYTEST_ARGS)

lint: venv  ## ruff (checks and formatting), mypy, ansible-lint (production profile), ansible-doc of every module, pip-audit of the pins
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/ansible-lint
	@for module in plugins/modules/*.py; do \
		name=$$(basename $$module .py); \
		$(BIN)/ansible-doc -t module firm.core.$$name > /dev/null || { echo "ansible-doc cannot load firm.core.$$name"; exit 1; }; \
	done; echo "ansible-doc: every module's documentation loads"
	$(BIN)/python scripts/audit-deps.py requirements.txt requirements-dev.txt

bench: venv  ## Benchmarks: print figures and write bench/results/*.json
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

deps:  ## Debian packages (apt-packages.txt), installed only when missing
	scripts/install-deps.sh apt-packages.txt

venv: $(STAMP)  ## The virtual environment with pinned requirements and the firm command

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

services: deps  ## Start Redis on loopback unless it already answers
	roles/testbed/files/start-redis.sh

molecule: deps venv services  ## Role scenarios on network-namespace test hosts (root, about 4 min)
	scripts/molecule-all.sh

molecule-cluster: venv  ## Opt-in: provision and verify a real cluster (INVENTORY=... KUBECONFIG=...)
	scripts/molecule-cluster.sh "$(INVENTORY)" "$(KUBECONFIG)"

SYSBENCH_DIRS = /var/lib/firm/sysbench $(shell python3 -c 'import json; print(json.load(open("/etc/firm/anomaly_tools.json")).get("sysbench_dir", ""))' 2>/dev/null)

clean:  ## Remove the virtual environment and caches, and the disk anomaly's sysbench files (docs/anomalies.md)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .ansible *.egg-info controller/*.egg-info
	@for dir in $(sort $(SYSBENCH_DIRS)); do \
		ls "$$dir"/test_file.* > /dev/null 2>&1 || continue; \
		rm -f "$$dir"/test_file.* && echo "removed sysbench's files in $$dir" \
			|| { echo "cannot remove sysbench's files in $$dir: run make clean as root"; exit 1; }; \
		rmdir "$$dir" 2> /dev/null || true; \
	done
