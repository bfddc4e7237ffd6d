# annocloud — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
BUF := .cache/tools/node_modules/.bin/buf
DATA_DIR ?= ./data
PORT ?= 8080
GRPC_PORT ?= 50051

.PHONY: help install run test test-unit test-integration test-e2e lint format typecheck protos protos-check bench clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: ## create .venv and install pinned tools (idempotent, cached)
	@bash scripts/bootstrap.sh

run: install ## start annocloud (embedded default) with a demo project; prints the URLs and keys
	$(PY) -m annocloud_server.cli serve --data-dir $(DATA_DIR) --port $(PORT) --grpc-port $(GRPC_PORT) --demo

test: install protos-check lint ## the whole suite: protos, lint, types, unit, integration, end-to-end
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: install ## unit tests only (no sockets)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-integration: install ## each service started for real on port 0
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

test-e2e: install ## REST and gRPC end to end on the embedded default
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

lint: install ## ruff (lint + format check) and mypy --strict
	.venv/bin/ruff check services sdk tests bench
	.venv/bin/ruff format --check services sdk tests bench
	.venv/bin/mypy

format: install ## apply ruff formatting and fixes
	.venv/bin/ruff format services sdk tests bench
	.venv/bin/ruff check --fix services sdk tests bench

protos: install ## buf format + lint + breaking, then regenerate gen/python
	$(BUF) format -w
	$(BUF) lint
	@if git rev-parse --verify -q HEAD >/dev/null && git cat-file -e HEAD:buf.yaml 2>/dev/null; then \
	  $(BUF) breaking --against '.git#branch=main'; fi
	bash scripts/gen_protos.sh

protos-check: install ## fail when generated code is stale or buf lint fails
	bash scripts/protos_check.sh

bench: install ## embedded-default benchmarks; figures land in bench/README.md
	$(PY) bench/run_all.py

clean: ## remove local data and caches (keeps .venv and tools)
	rm -rf $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
