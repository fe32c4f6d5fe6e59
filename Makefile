# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each installs what it needs first (idempotently); heavy builds are cached outside
# the work tree (see tests/controlplane/build.sh, IMAGEDRIFT_CACHE).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: all deps python-deps system-deps controlplane lint test unit demo bench bench-scale clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

python-deps: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

controlplane:
	@tests/controlplane/build.sh >/dev/null

deps: python-deps system-deps controlplane

lint: python-deps
	$(BIN)/ruff check operator tests scripts
	$(BIN)/ruff format --check operator tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: python-deps
	$(BIN)/pytest tests/unit

test: deps lint
	$(BIN)/pytest

demo: deps
	$(BIN)/python scripts/demo.py

bench: deps
	$(BIN)/python scripts/bench_polling.py

# The real operator process at fleet size, e.g. make bench-scale ARGS="--policies 1000 --workloads 10000 --bases 20"
bench-scale: deps
	$(BIN)/python scripts/bench_scale.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
