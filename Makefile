# interpbench: `make bench` runs the default grid, `make test` runs the tests.
# Both create .venv on first use; nothing else is needed on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= results/runs/bench

.PHONY: venv bench perf test test-fast test-slow reference chromium clean

venv: $(STAMP)

# torch is pinned to the CPU build served from the local wheel cache; installing it
# first keeps pip from resolving a multi-GB CUDA build for captum's `torch` requirement.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

bench: $(STAMP)
	rm -rf $(RUN_DIR)
	$(BIN)/interpbench run --variant all --out $(RUN_DIR)
	$(BIN)/interpbench leaderboard $(RUN_DIR) --out results
	$(BIN)/interpbench report $(RUN_DIR) --out results/report.html

# Speed figures measured side by side in one process (interpbench/perf*.py); exit 0 even when a target is missed.
perf: $(STAMP)
	$(BIN)/interpbench perf --out results/perf.json

# The reference leaderboard `make test` checks a fresh quick run against (tests/test_reference.py).
# Regenerate it, and commit it, when a change to a method or metric is meant to move scores.
QUICK_CASES := tracr_lib/reverse,tracr_lib/hist,tracr_lib/frac_prevs,algorithmic/prev_token
QUICK_METHODS := oracle,uniform,random,attention_last_layer,attention_rollout,saliency,integrated_gradients,feature_ablation,head_program_synthesis,program_synthesis
QUICK_VARIANTS := base,rotated,reshuffled_attention
reference: $(STAMP)
	rm -rf results/runs/reference
	$(BIN)/interpbench run --case $(QUICK_CASES) --method $(QUICK_METHODS) --variant $(QUICK_VARIANTS) --out results/runs/reference
	$(BIN)/interpbench leaderboard results/runs/reference --out results/reference

# Headless Chromium and chromedriver (Debian packages) for the report's browser test
# (tests/test_report_html.py: skipped without them, except under CI, where it fails).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver'; \
	else echo "chromium: no apt-get here; install Chromium and chromedriver for the report's browser test"; fi

test: $(STAMP) chromium
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

clean:
	rm -rf $(VENV) .cache results/runs
