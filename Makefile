# Entry points. Every target installs what is missing first (scripts/setup.sh, idempotent).
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: help setup setup-test repro test test-fast lint lint-only wheel image format bench ui clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## virtualenv with pinned packages + the Fashion-MNIST Debian package
	@bash scripts/setup.sh

setup-test:  ## setup, plus what the tests need (PostgreSQL, Chromium)
	@bash scripts/setup.sh --test

repro: setup  ## run the whole pipeline on the embedded default (dvc repro)
	dvc repro
	@echo; cat outputs/eval/compatibility.md

test: setup-test  ## lint, then the whole test suite
	@$(MAKE) --no-print-directory lint-only
	python -m pytest -q

test-fast: setup-test  ## lint, then every test not marked slow (minutes, for iterating)
	@$(MAKE) --no-print-directory lint-only
	python -m pytest -q -m "not slow"

lint: setup  ## ruff; hadolint (Dockerfile); workflow schema + zizmor (.github/workflows); offline
	@$(MAKE) --no-print-directory lint-only

lint-only:
	ruff check . && ruff format --check .
	hadolint Dockerfile
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	zizmor --offline --no-progress --persona=auditor .github/workflows/

wheel: setup  ## build dist/fct_registry-*.whl (extras: docs/install.md; slow test: tests/packaging)
	rm -rf build dist fct_registry.egg-info
	pip wheel -q --no-deps --no-build-isolation -w dist .
	rm -rf build fct_registry.egg-info
	@ls dist/*.whl

image:  ## build the image with podman, check it inside (IMAGE_ARGS=--light: uid + fct --help; --ci: what CI runs)
	bash scripts/build-image.sh $(IMAGE_ARGS)

bench: setup  ## benchmarks (ratios measured side by side; ~10 minutes)
	python benchmarks/bench_evaluation.py
	python benchmarks/bench_resolver.py
	python benchmarks/bench_upgrade.py
	python benchmarks/bench_gate.py
	python benchmarks/bench_determinism.py

ui: setup  ## MLflow UI + compatibility page (http://127.0.0.1:5000/fct/) on the default store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --app-name fct --workers 1 \
	  --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

clean:  ## remove pipeline outputs (keeps the DVC cache)
	rm -rf outputs
