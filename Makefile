# okome — a Redis module. `make help` lists the targets.
SHELL := /bin/bash
PORT ?= 6379
CARGO ?= cargo
RELEASE_LIB := target/release/libokome.so
DEBUG_LIB := target/debug/libokome.so
PYTHON ?= python3
VENV := target/venv
VENV_PY := $(VENV)/bin/python

.DEFAULT_GOAL := help

# `make help` prints each target's `## ` comment, with $(PORT) and
# $(FUZZ_SECONDS) in it replaced by their values.
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}' \
	  | sed -e 's|$$(PORT)|$(PORT)|g' -e 's|$$(FUZZ_SECONDS)|$(FUZZ_SECONDS)|g'

deps: ## Install what building and testing need, if missing (Debian: redis-server, redis-tools, libclang-dev, python3-redis, python3-venv, prometheus-redis-exporter)
	@bash scripts/deps.sh

build: deps ## Build the module (release): target/release/libokome.so
	$(CARGO) build --release -p okome

# target/run/redis.conf is written afresh from redis.conf.example on every
# `make run`: a CONFIG REWRITE lands in it and is lost on the next run. Keep
# settings in redis.conf.example or pass them in ARGS ("--name value ...",
# redis-server's command-line form, module configs included).
ARGS ?=
run: build ## Start redis-server on 127.0.0.1:$(PORT) (PORT=n) with the module, in the foreground (Ctrl-C stops it); ARGS="--name value ..." adds settings
	@mkdir -p target/run
	@sed 's#/path/to/libokome.so#$(CURDIR)/$(RELEASE_LIB)#' redis.conf.example > target/run/redis.conf
	cd target/run && exec redis-server ./redis.conf --port $(PORT) $(ARGS)

test: deps ## Build, then run every unit and integration test
	$(CARGO) build -p okome
	OKOME_MODULE=$(CURDIR)/$(DEBUG_LIB) $(CARGO) test --workspace
	$(MAKE) --no-print-directory python-test

# target/venv: the Python package's test and lint tools (python/requirements-dev.txt).
$(VENV)/.installed: python/requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
	touch $@

python-install: $(VENV)/.installed
	$(VENV_PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall ./python
	rm -rf python/build python/src/okome.egg-info

python-test: deps python-install ## Python package tests (pytest, real servers) in target/venv
	$(CARGO) build -p okome
	cd python && OKOME_MODULE=$${OKOME_MODULE:-$(CURDIR)/$(DEBUG_LIB)} ../$(VENV_PY) -m pytest -q -p no:cacheprovider --timeout 120

test-compat: deps python-install ## Run the integration suite and the Python tests on Redis 7.0 and Valkey 9, and on each server in COMPAT_SERVERS="path ..." if set
	bash scripts/compat.sh

leak-check: deps ## okome under valgrind (in Valkey 9, libc malloc) through every command; fails on leaks
	bash scripts/leak-check.sh

bench: build ## Benchmark against INCR/GET and Lua limiters; writes bench/RESULTS.md
	python3 bench/bench.py

FUZZ_SECONDS ?= 30
fuzz: ## Fuzz the pure core (grammar, keys, limiter) with cargo fuzz, $(FUZZ_SECONDS) s each (FUZZ_SECONDS=n)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p target
	@cd fuzz && for t in grammar keys limiter; do \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  if RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) > ../target/fuzz-$$t.log 2>&1; then \
	    grep -E '^Done' ../target/fuzz-$$t.log || true; \
	  else tail -40 ../target/fuzz-$$t.log; exit 1; fi; \
	done

lint: deps ## cargo fmt --check, clippy with warnings as errors, no import cycle, no function over 60 lines
	$(CARGO) fmt --all -- --check
	$(PYTHON) scripts/import-cycles.py src core/src
	$(PYTHON) scripts/long-fns.py --max 60 src core/src
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory python-lint

python-lint: python-install ## ruff (lint + format check) and mypy --strict on python/ and examples/fastapi
	cd python && ../$(VENV_PY) -m ruff check . ../examples/fastapi
	cd python && ../$(VENV_PY) -m ruff format --check . ../examples/fastapi
	cd python && ../$(VENV_PY) -m mypy
	cd python && ../$(VENV_PY) -m mypy --strict ../examples/fastapi

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output
	$(CARGO) clean

.PHONY: help deps build run test test-compat leak-check bench fuzz lint fmt clean python-install python-test python-lint
