# Set-up and everyday commands. Each target creates or reuses the local virtual environment .venv.
#   make demo   upscale the built-in sample with the default model, report PSNR/SSIM, write a figure
#   make test   install the test dependencies and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# This machine keeps a CPU-only torch wheel in /opt/wheels; use it when present so that pip never
# downloads a multi-GB CUDA build.
WHEELS ?= /opt/wheels
PIP_FLAGS := -c constraints.txt $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(PIP_FLAGS) -e ".[test,onnx,compare,serve]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/superres demo -o demo-output

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/superres bench

clean:
	rm -rf $(VENV) demo-output .pytest_cache
