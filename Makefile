# The two README commands: `make demo` (main job on the default data) and `make test`.
# Each creates .venv on first use. torch is installed CPU-only unless an NVIDIA GPU is present.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.10 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# With no GPU, ask for the +cpu build explicitly, so pip can never fall back to the CUDA build.
TORCH_SPEC := $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo "torch==$(TORCH_VERSION)"; else echo "torch==$(TORCH_VERSION)+cpu"; fi)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# A local mirror of the data sets wins over downloads; use ../shared/data when it is there.
ifneq ($(wildcard ../shared/data),)
export RANKLOOP_DATA ?= $(abspath ../shared/data)
endif

.PHONY: demo test lint venv browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)" \
		|| $(PIP) install "$(TORCH_SPEC)" --extra-index-url $(TORCH_INDEX)
	$(PY) -c "import torch; print('constraint', 'torch==' + torch.__version__)" | cut -d' ' -f2 > $(VENV)/constraints.txt
	$(PIP) install -c $(VENV)/constraints.txt -e ".[all]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/rankloop experiment prf configs/prf_scifact.yaml

lint: venv
	$(VENV)/bin/ruff check rankloop tests benchmarks

# Debian's chromium for the browser test of `rankloop serve` (Playwright drives it by path and never
# downloads a browser); where it cannot be installed, that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 \
		&& apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
		|| echo "chromium is not installed: the browser test will skip"

test: lint browser
	$(PY) -m pytest -n 2 -q --ignore=tests/scale
	$(PY) -m pytest -p no:xdist -q tests/scale  # Ray's cluster in a process of its own

clean:
	rm -rf $(VENV)
