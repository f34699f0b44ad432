# animelite: the two everyday commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The demo stylizes the sample photos that ship in samples/ (see samples/ATTRIBUTION.md);
# `make demo PHOTOS=DIR` stylizes your own folder instead.
PHOTOS   ?= samples
OUT      ?= out
DEMO_OUT ?= $(OUT)/demo
# Where real weights live on this project's machines (for `make bench`); override on yours.
MIRROR ?= ../shared/models
STYLE  ?= hayao

.PHONY: setup demo test bench clean

# The runtime package only (what a user installs). Redone only when pyproject.toml changes,
# so later runs need no network.
$(BIN)/animelite: pyproject.toml
	@echo "setting up $(VENV) (first run only: installs animelite and its dependencies from the package index)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# The test extras on top (pytest, the server, OpenVINO, OpenCV, ...).
$(VENV)/.test-extras: $(BIN)/animelite
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/animelite

# Stylize the photos with the default style (built in, offline), write a before/after
# contact sheet and print the per-stage timing summary.
demo: setup
	$(BIN)/animelite stylize "$(PHOTOS)" -o "$(DEMO_OUT)/" --overwrite --contact-sheet

# torch is a test-only extra (an independent reference implementation); the
# suite skips those tests where it cannot be installed.
test: $(VENV)/.test-extras
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 \
	  || echo "torch not installed: torch reference tests will be skipped"
	$(BIN)/ruff check src tests scripts training
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/animelite models pull $(STYLE) --from "$(MIRROR)"
	$(BIN)/animelite bench --style $(STYLE) --photos "$(PHOTOS)"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
