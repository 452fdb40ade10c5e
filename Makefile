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

.PHONY: setup toolchain run test test-fast report lint bench gpu-check clean-results

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# tybox.target cortex-m4f (the default) cross-builds the generated C++ and runs it under QEMU: the
# Arm GNU toolchain and QEMU from Debian, installed here with apt-get when missing and this is
# root with apt-get (about a minute, once); otherwise it says what to install (or set
# tybox.target: host) and goes on.
ARM_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm
toolchain:
	@if command -v arm-none-eabi-g++ >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the Arm toolchain and QEMU for tybox.target cortex-m4f: apt-get install $(ARM_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(ARM_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $(ARM_PACKAGES) >/dev/null; } || \
	  echo "could not install them: the tybox jobs of tybox.target cortex-m4f will fail (set tybox.target: host)"; \
	else \
	  echo "note: tybox.target cortex-m4f needs $(ARM_PACKAGES) (apt-get install as root), or set tybox.target: host"; \
	fi

# the run, then its HTML report (Snakemake's --report reads the finished run's metadata)
run: setup toolchain
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.html

# The SLURM test runs beside the others, in its own pytest process (it brings up a cluster and
# needs no xdist worker; alone 4 to 5 minutes, about 340 CPU-s on a slow 2-core host, measured),
# so alongside it saves most of its time. Its output is printed after
# the others'; the target fails when either run fails (a SLURM run that PYTEST_ARGS deselects
# entirely is not a failure).
# The SLURM run collects tests/test_slurm.py alone (collecting every module costs about 12 CPU-s),
# unless PYTEST_ARGS names test paths itself.
SLURM_TESTS = $(if $(findstring tests/,$(PYTEST_ARGS)),,tests/test_slurm.py)

test: setup toolchain
	@slurm_log=$$(mktemp); \
	$(BIN)/python -m pytest -m slurm -v -p no:cacheprovider $(SLURM_TESTS) $(PYTEST_ARGS) >"$$slurm_log" 2>&1 & slurm_pid=$$!; \
	$(BIN)/python -m pytest -n auto --maxschedchunk 2 --durations=15 -m "not slurm" $(PYTEST_ARGS); rest=$$?; \
	wait $$slurm_pid; slurm=$$?; \
	echo "---- SLURM test (ran alongside) ----"; cat "$$slurm_log"; rm -f "$$slurm_log"; \
	test $$slurm -eq 5 && slurm=0; test $$rest -eq 0 -a $$slurm -eq 0  # 5: PYTEST_ARGS deselected it

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
