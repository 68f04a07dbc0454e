# One entry point for people and CI. Needs only python3 (and make); creates .venv from the lock files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: run test bench openapi system-deps clean

$(STAMP): requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	touch $(STAMP)

## Start the service on the embedded default (inline policies, presets, inspect, health, OpenAPI).
run: $(STAMP)
	$(BIN)/python -m app

## Run the whole test suite (installs nginx, caddy and redis-server from Debian when root and missing).
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

## Benchmark harness: prints one table, each figure next to its baseline (bench/RESULTS.md).
bench: $(STAMP) system-deps
	$(BIN)/python -m bench

openapi: $(STAMP)
	$(BIN)/python -m app openapi > openapi/openapi.json

system-deps:
	@missing=""; \
	for tool in nginx:nginx-light caddy:caddy redis-server:redis-server wrk:wrk curl:curl; do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (their tests are skipped; install them to run everything)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
