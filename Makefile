# Shorthands for .ci/dev.py, the entry point that needs only python3 (the README's commands call it directly).
PYTHON ?= python3

.PHONY: run test bench openapi system-deps clean

run test bench openapi system-deps clean:
	$(PYTHON) .ci/dev.py $@
