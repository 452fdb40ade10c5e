# tinyevo: `make run` runs the whole pipeline on config/config.yaml, `make test` runs the tests.
# Both create .venv when missing and install the package into it; when already set up they only
# check a stamp file (re-installed when pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tinyevo-installed
CORES  ?= all
CONFIG ?= config/config.yaml
PYTEST_ARGS ?=

.PHONY: setup run test test-fast report lint bench gpu-check clean-results

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# the run, then its HTML report (Snakemake's --report reads the finished run's metadata)
run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.html

# The SLURM test runs on its own after the rest: its jobs are timed out, and a cluster sharing
# the cores with the other tests' pipelines would only measure the contention.
test: setup
	$(BIN)/python -m pytest -n auto --durations=15 -m "not slurm" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m slurm -v $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n auto -m "not slow and not slurm" $(PYTEST_ARGS)

report: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.html

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python bench/space.py
	$(BIN)/python bench/proxies.py
	$(BIN)/python bench/evolution.py --jobs 2
	$(BIN)/python bench/train.py
	$(BIN)/python bench/tybox.py

# The GPU path against the CPU (bench/gpu.py): the tiny pipeline on CUDA with AMP, proxy scores
# and training accuracy against the CPU's, nets/s and images/s; skips (exit 0) without CUDA.
gpu-check: setup
	$(BIN)/python bench/gpu.py $(GPU_ARGS)

clean-results:
	rm -rf results .snakemake
