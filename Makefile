# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint unit pytest bench e2e clean install

# A fresh venv with the project (editable) and its dev extra: the embedded stack (pgserver, the local
# Storage server's web stack) and the tools. A deployment installs without it. Redone when pyproject
# changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make run: embedded PostgreSQL + local Storage + Dagster UI and daemon on http://127.0.0.1:3000
run: $(STAMP)
	$(BIN)/lifecycle dev

## make test: lint, types, then every test layer against real PostgreSQL and the local Storage server
test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict lifecycle

pytest: $(STAMP)
	$(BIN)/pytest

## make bench: side-by-side benchmarks (project vs raw psycopg, same run); writes BENCHMARKS.md
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## make e2e: the `make run` stack driven in headless Chromium
e2e: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/pytest -m e2e lifecycle_tests/e2e -p no:cacheprovider

clean:
	rm -rf $(VENV) .lifecycle .mypy_cache .pytest_cache .ruff_cache
