# Every target makes and uses the local virtualenv .venv by itself.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real data file: one setting for `make export`, the real-data tests (train.data.data_location
# reads the same variable, with the same default) and CI's retrain workflow (its `dvc pull` target).
SCL_DATA ?= ../shared/data/dataset_SCL.csv.gz
export SCL_DATA
MODELS_DIR ?= models
REPORTS_DIR ?= reports
BIND ?= 0.0.0.0:8000
export BIND
# onnxruntime's telemetry (app/__init__.py) off in every process make runs: benchmarks.ort_options,
# export.onnx and the peers' virtualenvs import onnxruntime before the service's package, or
# without it
ORT_DISABLE_TELEMETRY ?= 1
export ORT_DISABLE_TELEMETRY

SERVE_STAMP := $(VENV)/.serve-installed
DEV_STAMP := $(VENV)/.dev-installed
# The code `python -m export` imports (dvc.yaml's export stage names the same files).
TRAINING_CODE := $(wildcard train/*.py export/*.py) $(addprefix app/,__init__.py errors.py \
	inference/__init__.py inference/features.py inference/flights.py inference/model.py \
	observability/__init__.py observability/drift.py rest/__init__.py rest/http.py)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-20s %s\n", $$1, $$2}' \
		| sed $(foreach v,$(HELP_VARIABLES),-e 's|$$($(v))|$($(v))|g')

# The variables the help lines name, shown with their values.
HELP_VARIABLES := BIND SCL_DATA MODELS_DIR GRPC_RELOADS FUZZ_CASES WIRE_FUZZ_CASES \
	WIRE_FUZZ_GRPC_CASES CHAOS_DURATION SOAK_DURATION

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements.lock pins every version (constraints only: it installs nothing by itself), so a
# fresh clone gets the libraries the committed models were exported and tested with.
$(SERVE_STAMP): pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c requirements.lock -e .
	touch $@

$(DEV_STAMP): pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@ $(SERVE_STAMP)

.PHONY: lock
lock: $(DEV_STAMP) ## re-pin requirements.lock to what .venv has now
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

.PHONY: install
install: $(DEV_STAMP) ## install the service, training and test tools into .venv

.PHONY: serve
serve: $(SERVE_STAMP) ## serve the committed models on $(BIND) (WORKERS= sets the worker count)
	MODELS_DIR='$(MODELS_DIR)' $(BIN)/gunicorn -c gunicorn.conf.py 'app.main:create_app()'

.PHONY: export
export: $(MODELS_DIR)/delay-full.onnx ## train, select and export the models (SCL_DATA=..., MODELS_DIR=..., GATE=1: keep the current models if the new ones score worse forward)

# Reruns only when the data or the code that turns it into a model changed.
$(MODELS_DIR)/delay-full.onnx: $(SCL_DATA) $(TRAINING_CODE) | $(DEV_STAMP)
	nice $(BIN)/python -m export --data $(SCL_DATA) --models-dir $(MODELS_DIR) --reports-dir $(REPORTS_DIR) $(if $(GATE),--gate)

.PHONY: model-slices
model-slices: $(DEV_STAMP) ## the models' forward figures by airline and flight type, against the baseline (reports/model-slices.md; about 30 s)
	$(BIN)/python -m train.slices --data $(SCL_DATA) --models-dir $(MODELS_DIR) --out $(REPORTS_DIR)

.PHONY: export-time
export-time: $(DEV_STAMP) ## time one export of $(SCL_DATA) to a scratch directory: wall, CPU, memory, models rebuilt or not (reports/export-time.md; about 5 minutes)
	$(BIN)/python -m benchmarks.export_time --data $(SCL_DATA) --out $(REPORTS_DIR)

.PHONY: check-models
check-models: $(SERVE_STAMP) ## check a model directory before it goes live (MODELS_DIR=...)
	$(BIN)/python -m app.inference.check_models '$(MODELS_DIR)'

.PHONY: openapi
openapi: $(SERVE_STAMP) ## write docs/openapi.json, the published API contract, for the models in MODELS_DIR (after a change to it, or a retrain)
	$(BIN)/python -m app.rest.openapi $(MODELS_DIR) > docs/openapi.json.tmp && mv docs/openapi.json.tmp docs/openapi.json

.PHONY: lint
lint: $(DEV_STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: test
test: lint ## lint, then the test suite (real-data tests run when $(SCL_DATA) exists)
	$(BIN)/pytest

# The export of all the real data (about 6 minutes on one thread) runs beside the other slow tests
# (the other real-data export among them), not after them: one pytest each, on two cores; its
# output follows theirs. (pytest-xdist's --dist loadgroup, which would say this with markers,
# groups nothing under pytest 9.2: pytest-dev/pytest-xdist#1386.)
ALL_DATA_EXPORT := tests/test_export.py::test_make_export_reproduces_the_committed_models
.PHONY: test-slow
test-slow: $(DEV_STAMP) ## the slow tests: real-data export reproduces models/, container image
	@mkdir -p build
	$(BIN)/pytest -m slow -p no:cacheprovider $(ALL_DATA_EXPORT) > build/test-slow-export.log 2>&1 & \
	$(BIN)/pytest -m slow --deselect $(ALL_DATA_EXPORT); others=$$?; \
	wait $$!; whole=$$?; cat build/test-slow-export.log; \
	test $$others = 0 && test $$whole = 0

-include mk/*.mk
