# Set-up and entry points. `make demo` and `make test` work on a fresh machine: they create .venv, install
# torch 2.13.0 (the local CPU wheel) before anything else, then the project in editable mode.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast benchmarks report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Generate synface_proc, run the baselines on its test split, print the table and where the runs are.
demo: install
	$(BIN)/bench data dataset=synface_proc
	$(BIN)/bench run -m method=const_depth,avg_depth,ellipsoid preset=fast
	$(BIN)/bench report
	@cat reports/shape_recon.md
	@echo "MLflow runs: $(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns); browse with:"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

test: install
	$(BIN)/python -m pytest -q

# Speed figures (pytest-benchmark); not part of the test run.
benchmarks: install
	$(BIN)/python -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
