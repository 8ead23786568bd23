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

# The demo: a small synface_proc (1,000 training images for avg_depth; the test split is the full one's), then the
# trivial baselines, Unsup3d and GAN2Shape (the CPU recipe, preset=cpu: the shipped pre-trained networks and 32 px
# GAN) on the same first DEMO_IMAGES test images, the table, and the path of a GAN2Shape result page.
DEMO_IMAGES ?= 3
DEMO_DATA := dataset.root=data/synface_proc_demo dataset.generate.train_size=1000
demo: install
	$(BIN)/bench data dataset=synface_proc $(DEMO_DATA)
	$(BIN)/bench run -m method=const_depth,avg_depth,ellipsoid,unsup3d,gan2shape preset=cpu eval.limit=$(DEMO_IMAGES) \
		$(DEMO_DATA) tracking.experiment=demo
	$(BIN)/bench report tracking.experiment=demo report.out_dir=outputs/demo
	@cat outputs/demo/shape_recon.md
	@echo "MLflow runs: $(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns); browse with:"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

test: install
	$(BIN)/python -m pytest -q

# Speed figures (pytest-benchmark); not part of the test run.
benchmarks: install
	$(BIN)/python -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
