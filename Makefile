# hierbench — two commands on a fresh machine: `make setup`, then `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export JAX_PLATFORMS ?= cpu
export PYTHONHASHSEED := 0

.PHONY: setup test test-all bench torch-bench references report regress baseline sweep figures paper peers perf scale lint lock clean help

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

bench: setup  ## the default benchmark (benchmarks/experiments/bench.toml): five methods on hier-linear, N in {10, 100, 1000}
	$(VENV)/bin/hierbench bench --out results/bench

torch-bench: setup  ## JAX jit vs torch eager vs torch.compile per family, N in {100, 1000, 10^4} (experiments/torch-bench.toml) -> results/torch/
	$(VENV)/bin/hierbench torch-bench --out results/torch


REFS ?= results/references
references: setup  ## gated NUTS reference of every dataset at its default size -> $(REFS)/
	$(VENV)/bin/hierbench references --references $(REFS)

report: setup  ## rebuild results/bench tables and figures from its records
	$(VENV)/bin/hierbench report results/bench/records.jsonl --out results/bench

regress: setup  ## regression gate: rerun the quick suite (experiments/regress-quick.toml), compare with results/baselines/quick.json (exit 1: worse)
	$(VENV)/bin/hierbench regress

baseline: setup  ## rewrite the regression gate's baseline results/baselines/quick.json
	$(VENV)/bin/hierbench baseline update

EXP ?= scaling
JOBS ?= 1
sweep: setup  ## an experiment of benchmarks/experiments/: make sweep EXP=scaling [QUICK=1] [JOBS=2]; resumable
	$(VENV)/bin/hierbench sweep $(EXP) --jobs $(JOBS) $(if $(QUICK),--quick)

figures: setup  ## every figure and table of the paper's experiments from the stored records -> results/paper/
	$(VENV)/bin/hierbench figures --out results/paper

# A sweep with failed cells (exit 1) does not stop the others: their records are kept, the tables show
# the failures, and the exit status is still the failure's.
PAPER_EXPERIMENTS := scaling accuracy movielens theta_collapse
paper: setup  ## the paper's four sweeps (resumable; JOBS=K), then `make figures`
	status=0; for exp in $(PAPER_EXPERIMENTS); do \
	  $(VENV)/bin/hierbench sweep $$exp --jobs $(JOBS) || status=$$?; \
	done; \
	$(VENV)/bin/hierbench figures --out results/paper || status=$$?; \
	exit $$status

peers: setup  ## ours vs every peer, one table per model and family (experiments/peers.toml) -> results/peers/ (about 1.5 h on 2 cores; resumes)
	$(VENV)/bin/hierbench peers --out results/peers

perf: setup  ## performance suite: one step per family, ours vs numpyro (on our joint and native), vs the floor -> results/perf/
	@mkdir -p results/perf
	$(PY) -m pytest benchmarks/perf -q -p no:xdist -p no:cacheprovider --benchmark-json=results/perf/benchmark.json \
	  --perf-summary=results/perf/summary.md

SCALE_ARGS ?=
scale: setup  ## experiments/scale.toml: minibatch VI on MovieLens-25M-shaped data (162,541 users), never padded, + summary -> results/scale/
	$(VENV)/bin/hierbench scale --out results/scale $(SCALE_ARGS)

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
