# animelite: the two everyday commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Where real weights and photos live on this project's machines; override on yours.
MIRROR ?= ../shared/models
PHOTOS ?= ../shared/photos/scenes
OUT    ?= out
STYLE  ?= hayao

.PHONY: setup demo test bench clean

$(BIN)/animelite: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/animelite

# Fetch the model (from the local mirror when there is one, else its URL) and stylize the photos.
demo: setup
	@if [ -d "$(MIRROR)" ]; then $(BIN)/animelite models pull $(STYLE) --from "$(MIRROR)"; \
	 else $(BIN)/animelite models pull $(STYLE); fi
	$(BIN)/animelite stylize "$(PHOTOS)" -o "$(OUT)" --style $(STYLE)
	@echo "stylized photos are in $(OUT)/"

# torch is a test-only extra (an independent reference implementation); the
# suite skips those tests where it cannot be installed.
test: setup
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 \
	  || echo "torch not installed: torch reference tests will be skipped"
	$(BIN)/ruff check src tests scripts training
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/animelite models pull $(STYLE) --from "$(MIRROR)"
	$(BIN)/animelite bench --style $(STYLE) --photos "$(PHOTOS)"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
