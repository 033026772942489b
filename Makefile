# Entry points. Every target installs what is missing first (scripts/setup.sh, idempotent).
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export OMP_WAIT_POLICY ?= PASSIVE
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: help setup setup-test repro test test-fast lint lint-only wheel docs docs-serve image format bench ui clean

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

lint: setup  ## ruff; hadolint; workflow schema + zizmor; mkdocs build --strict (docs/); offline
	@$(MAKE) --no-print-directory lint-only

lint-only:
	ruff check . && ruff format --check .
	hadolint Dockerfile
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	zizmor --offline --no-progress --persona=auditor .github/workflows/
	@# no -q: mkdocs counts only the warnings it logs, so -q would let a broken link pass
	d=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$$d"; \
	  rc=$$?; rm -rf "$$d"; exit $$rc

docs: setup  ## the docs site into site/ (strict: a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

docs-serve: setup  ## the docs site at http://127.0.0.1:8000, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 mkdocs serve --strict --dev-addr 127.0.0.1:8000

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
