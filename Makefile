# The two commands a newcomer needs: `make demo` and `make test`.
# Everything else (the virtualenv, Python packages, Chromium for browser tests) is
# installed by the targets themselves.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests and the demo read the course's CSVs from a data directory when one is given;
# next to this checkout there is one on the project's own machines. Elsewhere the
# sources are downloaded from their public URLs (and cached).
SHARED_DATA := $(wildcard ../shared/data)
export SML_DATA_DIR ?= $(abspath $(SHARED_DATA))

DEMO_HOME ?= sml_data
DEMO_ARGS ?=

.PHONY: help venv system-deps demo lint test test-fast soak bench clean tracking-server

# `make help` lists every target with the text after its `##` (a unit test checks that
# each .PHONY target has one).
help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: serverless-ml needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1 | head -1). Run: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its test extras (about 1.5 GB)

demo: $(STAMP) ## the main job for Iris and Titanic, then the monitoring site (DEMO_ARGS=--no-site: batch part only)
	SML_STORE_DIR=$(DEMO_HOME)/feature_store $(BIN)/python -m serverless_ml.demo $(DEMO_ARGS)

system-deps: ## Debian packages the tests need (Chromium, PostgreSQL) when missing; needs root
	scripts/install-system-deps.sh

# The rules, and why each is on, are in pyproject.toml ([tool.ruff.lint]). bench/.venv-reference
# is left out (the benchmarks' reference environment). mypy reads its paths and strictness
# from pyproject.toml ([tool.mypy]: serverless_ml and monitoring_app).
LINT_PATHS := serverless_ml monitoring_app entrypoints $(wildcard bench/*.py) tests

lint: $(STAMP) ## ruff's bug-finding rules over the code, tests and benchmarks, then mypy over the library and site (make test runs it first)
	$(BIN)/ruff check --no-cache $(LINT_PATHS)
	$(BIN)/mypy

test: $(STAMP) lint system-deps ## lint, then the whole test suite on every CPU (installs the Debian packages first)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## the tests not marked slow (no system packages installed)
	$(BIN)/python -m pytest -m "not slow"

# The reliability suite's long variants (more kill points and concurrency rounds);
# rewrites docs/reliability.md from the figures the tests record, pass or fail.
soak: $(STAMP) system-deps ## the reliability suite's long variants; rewrites docs/reliability.md
	rm -f test-output/reliability.json
	SML_SOAK=1 $(BIN)/python -m pytest tests/reliability; status=$$?; \
		$(BIN)/python scripts/reliability_table.py && exit $$status

bench: $(STAMP) ## side-by-side benchmarks against references (prints ratios)
	$(BIN)/python -m bench

# An MLflow tracking server on PostgreSQL, http://127.0.0.1:5000 (README, "Scaling out"):
# on the database SML_TRACKING_DB_URI names, else on a private PostgreSQL cluster in
# $(DEMO_HOME)/postgres, created on first use and left running.
tracking-server: $(STAMP) ## an MLflow tracking server on PostgreSQL, http://127.0.0.1:5000
	@test -n "$$SML_TRACKING_DB_URI" || scripts/local-postgres.sh start $(DEMO_HOME)/postgres
	@SML_TRACKING_DB_URI="$${SML_TRACKING_DB_URI:-$$(scripts/local-postgres.sh uri $(DEMO_HOME)/postgres mlflow)}" \
		$(BIN)/sml tracking-server --artifacts-destination $(DEMO_HOME)/mlartifacts

clean: ## remove .venv, sml_data, test and type-check caches and test-output
	rm -rf $(VENV) sml_data .pytest_cache .mypy_cache test-output
