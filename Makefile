# Every target sets up its own virtual environment first, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCALE  ?= 1
BENCH_ARGS ?=

.PHONY: setup demo test test-fast lint bench bench-feed clean

$(BIN)/edu-migrate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/edu-migrate

demo: setup
	$(BIN)/edu-migrate demo --scale $(SCALE)

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not fullscale"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run --scale $(SCALE) $(BENCH_ARGS)

# The change feed against the scan, on a stock PostgreSQL 15 that allows logical decoding.
bench-feed: setup
	$(BIN)/python -m bench.feed --scale $(SCALE) --out bench/results/feed-scale$(SCALE).json

clean:
	-$(BIN)/edu-migrate db stop
	rm -rf .edu-migrate logs
