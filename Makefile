# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each installs what it needs first (idempotently); heavy builds are cached outside
# the work tree (see tests/controlplane/build.sh, IMAGEDRIFT_CACHE).
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: all lock deps python-deps system-deps controlplane lint test unit demo bench bench-scale bench-gitops clean

all: test

# Exactly the versions in requirements/dev.txt, each checked against its hash; the package
# itself goes in last, without dependencies, built by the locked setuptools. A changed lock
# builds the venv anew, so nothing stays from an earlier lock.
$(STAMP): requirements/dev.txt pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
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

# Two workers (the machine has two cores and the end-to-end tests mostly wait): each gets
# its own control plane and registry; whole files go to one worker, in collection order
# (unit, integration, e2e), and the secret-leak check runs last and reads every worker's.
PYTEST_WORKERS ?= 2
test: deps lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

demo: deps
	$(BIN)/python scripts/demo.py

bench: deps
	$(BIN)/python scripts/bench_polling.py

# The real operator process at fleet size, e.g. make bench-scale ARGS="--policies 1000 --workloads 10000 --bases 20"
bench-scale: deps
	$(BIN)/python scripts/bench_scale.py $(ARGS)

# GitOps write-back at size: make bench-gitops ARGS="--workloads 500 --repos 50 --policies 10"
bench-gitops: deps
	$(BIN)/python scripts/bench_gitops.py $(ARGS)

# Re-resolves every dependency to the newest versions pyproject.toml allows and rewrites both
# locks (dev: tests and tools; runtime: what the image installs, the same versions). Run
# it deliberately, then `make test`, and commit the locks with what they changed.
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet --upgrade
lock: python-deps
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev $(LOCK_FLAGS) -o requirements/dev.txt
	$(BIN)/uv pip compile pyproject.toml requirements/build.in -c requirements/dev.txt $(LOCK_FLAGS) -o requirements/runtime.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
