# carlab: two commands for a newcomer.
#
#   make lab     create .venv if needed, install carlab, start JupyterLab on notebooks/
#   make test    create .venv if needed, install carlab, run every test
#
# Needs only Python >= 3.11 with pip/venv, and make. Nothing here uses sudo; `make lab` works as root too.
# Extra arguments: make lab LAB_ARGS="--no-browser --port 8899"
#                  make test PYTEST_ARGS="-k track -x"

SHELL := /bin/bash

# The Python that creates the venv: python3.11 when it runs, else python3 if it is >= 3.11.
ifndef PYTHON
PYTHON := $(shell for p in python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && command -v $$p && break; \
	done)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install whenever pyproject.toml changes (new dependency, new entry point).
STAMP := $(VENV)/.carlab-installed

LAB_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

# pygame must never try to open a window or a sound card in tests.
TEST_ENV := SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy

.PHONY: lab install test bench clean distclean help

help:
	@echo "make lab      start JupyterLab on notebooks/ (LAB_ARGS=... passes options)"
	@echo "make test     run all tests (PYTEST_ARGS=... passes options)"
	@echo "make install  create $(VENV) and install carlab with its dev extras"
	@echo "make bench    run benchmarks/env_speed.py (BENCH_ARGS=... passes options)"
	@echo "make clean    remove caches and build outputs; make distclean also removes $(VENV)"

$(PY):
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: carlab needs Python >= 3.11; found python3.11: none," \
			"python3: $$(python3 --version 2>&1 || echo none)" >&2; \
		echo "       (pass one explicitly: make PYTHON=/path/to/python3.11 ...)" >&2; exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "error: $(PYTHON) is $$("$(PYTHON)" --version 2>&1); carlab needs Python >= 3.11" >&2; \
		echo "       (pass one explicitly: make PYTHON=/path/to/python3.11 ...)" >&2; exit 1; fi
	"$(PYTHON)" -m venv "$(VENV)"

$(STAMP): pyproject.toml | $(PY)
	"$(PY)" -m pip install -e ".[dev,sweep]"
	@touch "$(STAMP)"

install: $(STAMP)
	@echo "carlab is installed in $(VENV) ($$("$(PY)" --version))"

# Jupyter refuses to start as root without --allow-root, and containers, cloud notebooks and CI boxes
# run as root; the token stays on either way. (After LAB_ARGS, so `make -n` shows those first.)
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

lab: $(STAMP)
	"$(PY)" -m jupyter lab notebooks/ $(LAB_ARGS) $(ALLOW_ROOT)

test: $(STAMP)
	$(TEST_ENV) "$(PY)" -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	"$(PY)" benchmarks/env_speed.py $(BENCH_ARGS)

clean:
	rm -rf artifacts build dist .pytest_cache .hypothesis .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 \
		| xargs -0 -r rm -rf

distclean: clean
	rm -rf "$(VENV)"
