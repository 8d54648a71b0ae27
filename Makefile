# image-classifier: `make run` serves the embedded default model, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.complete
MODEL ?= default
MODELS_DIR := models
DEFAULT_MODEL_DIR := $(MODELS_DIR)/efficientnet-lite0
PORT ?= 8080
GRPC ?= 0
GRPC_PORT ?= 8081
TOOLS := .tools
RUN_MODEL_DIR := $(if $(filter default,$(MODEL)),$(DEFAULT_MODEL_DIR),$(MODELS_DIR)/$(subst /,--,$(MODEL)))
GRPC_FLAGS := $(if $(filter 1 true yes,$(GRPC)), --enable-grpc true --grpc-port $(GRPC_PORT))
PYTEST_ARGS ?=
PY_SOURCES := predictor classifier_canary classifier_kube classifier_plan tests bench models scripts
# The lock: uv.lock (one file, hashes for every package, every extra). `make lock` regenerates it.
UV_VERSION := 0.13.9
LOCK_EXTRAS := --extra dev --extra gpu --extra canary --extra plan

.PHONY: help venv lock model run test lint format tools bench bench-capacity dashboard image image-check clean

help: ## List the targets and the variables they read
	@echo "Targets (make TARGET):"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'
	@echo "Variables (make TARGET VAR=value, e.g. make run PORT=9000 GRPC=1), as set now (the defaults unless given):"
	@printf '  %-15s %s\n' "MODEL=$(MODEL)" "what make model and make run serve: default (the embedded EfficientNet-Lite0) or a Hugging Face id" \
	  "PORT=$(PORT)" "HTTP port of make run (REST, /classify, /metrics, the try-it page)" \
	  "GRPC=$(GRPC)" "1 = make run serves the KServe v2 gRPC protocol too, on GRPC_PORT" \
	  "GRPC_PORT=$(GRPC_PORT)" "gRPC port of make run GRPC=1"

$(STAMP): pyproject.toml uv.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv export -q --frozen --no-emit-project $(LOCK_EXTRAS) --format requirements-txt -o $(VENV)/requirements.txt
	$(PY) -m pip install -q --require-hashes --no-deps -r $(VENV)/requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $@

venv: $(STAMP) ## Create .venv with every dependency (reused when complete)

$(DEFAULT_MODEL_DIR)/config.json: | $(STAMP)
	$(PY) -m models.build_default --out $(DEFAULT_MODEL_DIR)

model: $(STAMP) ## Materialize the model to serve under models/ (MODEL=default or a Hugging Face id)
ifeq ($(MODEL),default)
	@$(MAKE) --no-print-directory $(DEFAULT_MODEL_DIR)/config.json
else
	$(PY) -m models.fetch_hf $(MODEL) --out $(MODELS_DIR)/$(subst /,--,$(MODEL))
endif

run: model ## Serve the model on port PORT (CPU, or a GPU when present), try-it page at http://localhost:PORT/
	$(PY) -m predictor serve --model-dir $(RUN_MODEL_DIR) --http-port $(PORT) --enable-ui true$(GRPC_FLAGS)

tools: $(STAMP) ## Fetch helm and kubectl into .tools/ (from PATH when present)
	bash scripts/fetch_k8s_tools.sh $(TOOLS)

test: $(STAMP) tools ## Run every test (unit, integration, chart, queue, observability)
	@$(MAKE) --no-print-directory $(DEFAULT_MODEL_DIR)/config.json
	bash scripts/system_deps.sh
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## Lint Python with ruff
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

format: $(STAMP) ## Format Python with ruff
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)

bench: $(STAMP) ## Run the benchmark suite (not part of make test)
	bash bench/run_all.sh

dashboard: $(STAMP) tools ## Re-render docs/img/dashboard.png from a real load run (installs prometheus)
	@$(MAKE) --no-print-directory $(DEFAULT_MODEL_DIR)/config.json
	bash scripts/system_deps.sh
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) scripts/render_dashboard.py

bench-capacity: $(STAMP) ## Measure one pod's capacity for the planner: bench/results/capacity.json
	@$(MAKE) --no-print-directory $(DEFAULT_MODEL_DIR)/config.json
	$(PY) -m bench.capacity --model_dir $(DEFAULT_MODEL_DIR) --out bench/results/capacity.json

lock: ## Regenerate uv.lock from pyproject.toml (deterministic; versions move only with [tool.uv] exclude-newer)
	@[ -x $(VENV)/bin/uv ] || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q 'uv==$(UV_VERSION)'; }
	$(VENV)/bin/uv lock
	@echo "uv.lock written; the next make target reinstalls .venv from it"

BASE_IMAGE ?=
image: ## Build the container image (needs a Docker engine; BASE_IMAGE=... to use a locally built base)
	docker build $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t image-classifier:dev .

image-check: $(STAMP) tools ## Build the image and run it as the chart's pod spec runs it (~15 min; not in make test)
	@$(MAKE) --no-print-directory $(DEFAULT_MODEL_DIR)/config.json
	BASE_IMAGE=$(BASE_IMAGE) bash scripts/image_check.sh

clean: ## Remove the virtual environment, tools and built models
	rm -rf $(VENV) $(TOOLS) $(DEFAULT_MODEL_DIR)
