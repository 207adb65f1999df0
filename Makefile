# JourneyWatch — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MEMBERS := shared services/ingest services/detector services/api services/notifier services/cli
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
TEST_WORKERS ?= auto

.PHONY: help install run test test-unit lint format bench bench-ingest bench-detector bench-api bench-e2e bench-scale bench-cusum eval-scorer eval-detection lock clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): constraints.txt requirements-dev.txt $(foreach m,$(MEMBERS),$(m)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt $(foreach m,$(MEMBERS),-e $(m))
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install every package of the repo (idempotent)

run: install ## Run the whole local stack (broker, database, ingest, detector, api, simulator)
	$(BIN)/journeywatch run

test: install ## Run the full test suite (starts the broker and PostgreSQL it needs)
	@scripts/ensure-postgres
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: install ## Run only the fast tests that need no broker or database
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/src services/*/src

format: install ## Apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-ingest bench-detector bench-api bench-e2e ## Run every benchmark (prints ratios against in-run baselines)

bench-ingest: install ## events/s through POST /v1/events/batch vs a raw aiokafka producer
	$(BIN)/python -m bench.ingest

bench-detector: install ## detector events/s from the broker vs a raw decoding consumer; core costs
	$(BIN)/python -m bench.detector
	$(BIN)/python -m bench.detector_core

bench-api: install ## state/anomalies req/s and p50/p99 with 50 pollers vs a bare FastAPI endpoint
	$(BIN)/python -m bench.api

bench-e2e: install ## payment outage accepted → anomaly on the topic / in the API (p50/p95/max vs window + 2 s) and → signed webhook via the notifier
	$(BIN)/python -m bench.e2e $(E2E_ARGS)

bench-scale: install ## detector stages: events/s with 1 and 2 processes each vs the raw consumer, rebalance pause, latency (not in `bench`: 5–6 min; SCALE_ARGS=--help)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

bench-cusum: install ## in-control run lengths of the Poisson CUSUMs vs Wald's bound e^h (Monte Carlo, ~30 s; the budget's slack)
	$(BIN)/python -m bench.cusum_arl

eval-scorer: install ## NAB scores of OnlineScorer vs River baselines on the labelled corpus (held-out half)
	$(BIN)/python -m bench.scorer_eval $(EVAL_ARGS)

eval-detection: install ## Detector core on the labelled incident corpus: recall per family, strict, FA/day, delay (held-out seeds; DETECTION_ARGS=--help)
	$(BIN)/python -m bench.detection_eval $(DETECTION_ARGS)

lock: ## Re-pin constraints.txt from the current venv (after changing dependencies)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^journeywatch' > constraints.txt

clean: ## Remove the venv, local data and caches
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
