# One command each: `make demo` and `make test` create .venv when missing.
# The first Python >= 3.11 on PATH, however it is named; override with PYTHON=...
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3.14 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND := tensorflow

.PHONY: install demo lint test test-fast test-slow test-zoo bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.11 found on PATH (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdkeras demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not zoo and not subprocess"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Every keras.applications family (and keras-hub rows) through ONNX and LiteRT.
test-zoo: $(STAMP)
	$(BIN)/python -m pytest -q -m zoo tests/test_zoo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/step_time.py

clean:
	rm -rf $(VENV) demo_output deploy_output export_output distill_output zoo_output build *.egg-info
