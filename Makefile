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

.PHONY: help venv system-deps demo test test-fast soak bench clean tracking-server

help:
	@echo "make demo   - set up .venv and run the main job on the embedded feature store"
	@echo "make test   - set up .venv and run the whole test suite"
	@echo "make soak   - the reliability suite's long variants; rewrites docs/reliability.md"
	@echo "make bench  - side-by-side benchmarks (prints ratios)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	SML_STORE_DIR=$(DEMO_HOME)/feature_store $(BIN)/python -m serverless_ml.demo $(DEMO_ARGS)

system-deps:
	scripts/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The reliability suite's long variants (more kill points and concurrency rounds);
# rewrites docs/reliability.md from the figures the tests record, pass or fail.
soak: $(STAMP) system-deps
	rm -f test-output/reliability.json
	SML_SOAK=1 $(BIN)/python -m pytest tests/reliability; status=$$?; \
		$(BIN)/python scripts/reliability_table.py && exit $$status

bench: $(STAMP)
	$(BIN)/python -m bench

# An MLflow tracking server on PostgreSQL, http://127.0.0.1:5000 (README, "Scaling out"):
# on the database SML_TRACKING_DB_URI names, else on a private PostgreSQL cluster in
# $(DEMO_HOME)/postgres, created on first use and left running.
tracking-server: $(STAMP)
	@test -n "$$SML_TRACKING_DB_URI" || scripts/local-postgres.sh start $(DEMO_HOME)/postgres
	@SML_TRACKING_DB_URI="$${SML_TRACKING_DB_URI:-$$(scripts/local-postgres.sh uri $(DEMO_HOME)/postgres mlflow)}" \
		$(BIN)/sml tracking-server --artifacts-destination $(DEMO_HOME)/mlartifacts

clean:
	rm -rf $(VENV) sml_data .pytest_cache test-output
