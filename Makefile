# annocloud — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
BUF := .cache/tools/node_modules/.bin/buf
DATA_DIR ?= ./data
PORT ?= 8080
GRPC_PORT ?= 50051

.PHONY: help install install-infra run test test-unit test-integration test-e2e test-cluster test-chaos \
	lint format typecheck protos protos-check bench bench-cluster bench-crowd infra-up infra-down stack-up stack-down clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: ## create .venv and install pinned tools (idempotent, cached)
	@bash scripts/bootstrap.sh

install-infra: install ## fetch/install the cluster infra: Kafka jars (Maven), PostgreSQL (apt), Triton (pip); cached
	bash scripts/infra/postgres.sh install
	bash scripts/infra/kafka.sh fetch
	bash scripts/infra/triton.sh install

run: install ## start annocloud (embedded default) with a demo project; prints the URLs and keys
	$(PY) -m annocloud_server.cli serve --data-dir $(DATA_DIR) --port $(PORT) --grpc-port $(GRPC_PORT) --demo

test: install install-infra protos-check lint ## everything: protos, lint, types, unit, integration, e2e (both modes), cluster, chaos
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests --ignore=tests/chaos
	$(MAKE) --no-print-directory test-chaos

test-unit: install ## unit tests only (no sockets)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-integration: install ## each service started for real on port 0
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

test-e2e: install install-infra ## REST and gRPC end to end, embedded default and cluster mode (Kafka + PostgreSQL)
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

test-cluster: install install-infra ## cluster mode on real Kafka, PostgreSQL and Triton (+ e2e in both modes)
	$(PY) -m pytest -q -p no:cacheprovider tests/cluster tests/e2e

test-chaos: install install-infra ## faults (SIGKILL, broker/db restarts, replays) under load: lost and doubled must be 0
	$(PY) -m pytest -q -p no:cacheprovider -s tests/chaos

infra-up: install-infra ## start Kafka, PostgreSQL and Triton on 127.0.0.1 (state in .cache/infra)
	bash scripts/infra/postgres.sh start
	bash scripts/infra/kafka.sh start
	bash scripts/infra/triton.sh start

infra-down: ## stop what infra-up started (by pidfile; a no-op for what is not running)
	-bash scripts/infra/triton.sh stop
	-bash scripts/infra/kafka.sh stop
	-bash scripts/infra/postgres.sh stop

stack-up: infra-up ## cluster topology as processes: 5 services + gateway on Kafka/PostgreSQL/Triton
	$(PY) -m annocloud_server.cli stack up

stack-down: ## stop the processes of stack-up (infra stays up; make infra-down stops it)
	$(PY) -m annocloud_server.cli stack down

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

bench-cluster: install install-infra ## relay events/s and submit->QA latency, cluster vs embedded (bench/README.md)
	$(PY) bench/cluster_bench.py

bench-crowd: install ## crowd simulation (aggregation, box fusion) and dynamic vs fixed overlap (bench/README.md)
	$(PY) bench/crowd_bench.py
	$(PY) bench/overlap_bench.py

clean: ## remove local data and caches (keeps .venv and tools)
	rm -rf $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
