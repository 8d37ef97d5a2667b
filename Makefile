# interpbench: `make bench` runs the default grid, `make test` runs the tests.
# Both create .venv on first use; nothing else is needed on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= results/runs/bench

.PHONY: venv bench test test-fast test-slow clean

venv: $(STAMP)

# torch is pinned to the CPU build served from the local wheel cache; installing it
# first keeps pip from resolving a multi-GB CUDA build for captum's `torch` requirement.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	rm -rf $(RUN_DIR)
	$(BIN)/interpbench run --out $(RUN_DIR)
	$(BIN)/interpbench leaderboard $(RUN_DIR) --out results

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

clean:
	rm -rf $(VENV) .cache results/runs
