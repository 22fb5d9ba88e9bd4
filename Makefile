# optrepro — the README's commands. `make smoke` and `make test` work on a fresh Debian/Ubuntu machine:
# they create .venv from the lock when it is missing (PyPI only: pip's local config and find-links are ignored).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all
SCALE ?= full
PYPI := https://pypi.org/simple
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures texlive-science lmodern latexmk poppler-utils
# Never let a machine's pip config (extra indexes, find-links with local wheels) leak into the environment.
PIP_CLEAN := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null

.PHONY: help venv tex-deps smoke full report test lock gpu-check clean-smoke

help:
	@echo "make smoke      whole DAG at smoke scale on CPU -> paper/build/smoke/main.pdf"
	@echo "make test       the test suite (runs the smoke DAG once inside)"
	@echo "make full       snakemake --cores all (full scale: real data, GPUs)"
	@echo "make report     rebuild the PDF of SCALE (default full) from existing results"
	@echo "make lock       re-resolve requirements.lock from PyPI"
	@echo "make gpu-check  every GPU check in one command (on a machine with torch and a GPU)"

$(VENV)/bin/uv: requirements-bootstrap.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "optrepro needs Python >= 3.11"' \
	  || { echo "error: $(PYTHON) is older than 3.11; run make PYTHON=python3.11 ..."; exit 1; }
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) \
	  || { echo "error: cannot create a venv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PIP_CLEAN) $(VENV)/bin/python -m pip install -q --require-hashes --no-deps -r requirements-bootstrap.lock
	@touch $@

$(VENV)/.installed: $(VENV)/bin/uv requirements.lock pyproject.toml
	$(PIP_CLEAN) $(VENV)/bin/uv pip sync --no-config --index-url $(PYPI) --require-hashes --compile-bytecode --python $(PY) requirements.lock
	$(PIP_CLEAN) $(VENV)/bin/uv pip install --no-config --no-deps --python $(PY) -e .
	@touch $@

venv: $(VENV)/.installed

tex-deps:
	@if command -v latexmk >/dev/null && command -v pdflatex >/dev/null && command -v pdftotext >/dev/null \
	    && kpsewhich siunitx.sty lmodern.sty >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing TeX Live: $(TEX_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEX_PACKAGES) </dev/null; \
	else \
	  echo "error: the report needs TeX Live and latexmk. Install: sudo apt-get install --no-install-recommends $(TEX_PACKAGES)"; exit 1; \
	fi

# Snakemake runs under `optrepro supervise` (src/optrepro/stopping.py): in a process group that is stopped and
# reaped when Snakemake ends, even by SIGKILL, so no training or report job outlives it; and a stale lock left by
# a killed Snakemake is cleared first, only when no Snakemake process is alive in this directory. Incomplete
# outputs rerun (profiles/default: rerun-incomplete). So after a kill, the same command finishes the work.
SNAKEMAKE = PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/optrepro supervise $(VENV)/bin/snakemake

smoke: venv tex-deps
	$(SNAKEMAKE) --cores $(CORES) --config scale=smoke

full: venv tex-deps
	$(SNAKEMAKE) --cores $(CORES)

report: venv tex-deps
	$(SNAKEMAKE) --cores $(CORES) --config scale=$(SCALE) paper/build/$(SCALE)/main.pdf

# PYTEST_MARKS replaces the default marker selection (pyproject.toml), e.g. "not slow and not gpu and not slurm"
# adds the timing budgets, which .ci/run checks on the same smoke DAG run.
PYTEST_MARKS ?=
test: venv tex-deps
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q $(if $(PYTEST_MARKS),-m "$(PYTEST_MARKS)")

lock: $(VENV)/bin/uv
	$(PIP_CLEAN) $(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
	  --no-config --index-url $(PYPI) --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --override lock-overrides.txt --custom-compile-command "make lock" -o requirements.lock

# On a GPU machine with torch preinstalled and no network: carried pure-Python wheels in .whl/ are installed
# with --no-deps into a private target; the checks label their results with the torch and CUDA versions.
# GPU_CHECKS picks sections (benchmarks/gpu_check.py lists them; all by default, the sections' limits add up to 38
# minutes). Where a command may run 10 minutes, groups whose limits fit: GPU_CHECKS="tests step", "alsals epochs",
# "caadam data", "fuzzy concurrency", "nos nosproxy".
GPU_CHECKS ?=
gpu-check:
	@if ls .whl/*.whl >/dev/null 2>&1; then \
	  $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --target /tmp/optrepro-site .whl/*.whl; fi
	PYTHONPATH=$(CURDIR)/src:/tmp/optrepro-site timeout -k 10 2300 $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECKS)

clean-smoke:
	rm -rf results/smoke paper/build/smoke paper/generated/smoke
