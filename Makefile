# hierbench — two commands on a fresh machine: `make setup`, then `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export JAX_PLATFORMS ?= cpu
export PYTHONHASHSEED := 0

.PHONY: setup test test-all bench references report lint lock clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(VENV)/.installed  ## create .venv (Python 3.11) with the pinned dependencies

$(VENV)/.installed: requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c requirements/lock.txt -r requirements/lock.txt
	$(PIP) install --quiet --no-deps -e .
	touch $@

test: setup  ## the fast test suite (< 15 min on 2 cores)
	$(PY) -m pytest -n 2 -q

test-all: setup  ## every test, slow ones included
	$(PY) -m pytest -n 2 -q -m ''

bench: setup  ## the default benchmark: five methods on hier-linear, N in {10, 100, 1000}
	$(VENV)/bin/hierbench bench --out results/bench

DATASET_NAMES = $(shell $(PY) -c "from hierbench.datasets import DATASETS; print(*DATASETS)" 2>/dev/null)

references: setup  ## gated NUTS reference of every dataset at its default size -> results/references/
	@failed=""; for d in $(DATASET_NAMES); do \
	  echo "== $$d"; \
	  $(VENV)/bin/hierbench reference --dataset $$d --summary results/references/$$d.summary.csv \
	    || failed="$$failed $$d"; \
	done; \
	if [ -n "$$failed" ]; then echo "references refused or failed:$$failed"; exit 1; fi

report: setup  ## rebuild results/bench tables and figures from its records
	$(VENV)/bin/hierbench report results/bench/records.jsonl --out results/bench

lint: setup  ## ruff
	$(VENV)/bin/ruff check benchmarks datasets methods tests
	$(VENV)/bin/ruff format --check benchmarks datasets methods tests

lock:  ## re-resolve the exact pins from pyproject's ranges (needs the registries)
	rm -rf /tmp/hierbench-lock && $(PYTHON) -m venv /tmp/hierbench-lock
	/tmp/hierbench-lock/bin/pip install --quiet --upgrade pip
	/tmp/hierbench-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/hierbench-lock/bin/pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu//' > requirements/lock.txt

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache
