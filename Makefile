# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both work on a fresh Debian machine with Python 3.11 (root, or sudo for apt-get).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
APT_TEST := g++-aarch64-linux-gnu qemu-user-static cmake g++
PYTEST_ARGS ?=
TORCH := torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: demo test data test-tools torch

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(MAKE) --no-print-directory torch
	$(PY) -m pip install -q -e '.[host,tvm]'
	touch $@

# The CPU build of torch first: on the public index `torch==2.13.0` is the multi-GB CUDA build. PyTorch's CPU
# index where it answers within 3 s; else the plain pin (what pip's own configuration offers, e.g. a local
# wheel in find-links), so an offline machine does not wait on the network. Says which build it got.
torch:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if timeout 5 $(PY) -c "import socket; socket.create_connection(('download.pytorch.org', 443), 3)" 2>/dev/null; \
	 then $(PY) -m pip install -q --timeout 15 $(TORCH) --index-url $(TORCH_CPU_INDEX) || $(PY) -m pip install -q $(TORCH); \
	 else echo "$(TORCH_CPU_INDEX) not reachable: installing $(TORCH) from pip's configured indexes"; \
	      $(PY) -m pip install -q $(TORCH); fi
	@$(PY) -c "import torch; c = torch.version.cuda; print(f'torch {torch.__version__}:', f'the CUDA {c} build' if c else 'the CPU build')"

$(VENV)/.dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[host,tvm,dev]'
	touch $@

data:
	@test -f $(FASHION) || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

test-tools: $(VENV)/.installed
	@for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	 [ -z "$$missing" ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }
	# the aarch64 TVM runtime (the venv's TVM versions) the ARM tests link the cross-built C++ app against
	$(PY) examples/cpp/tvm/fetch_runtime.py --out .cache/aarch64-tvm

# 8 of the recipe's 20 epochs keep the whole chain under 3 minutes on 2 cores (benchmarks/demo.py measures it and
# writes README.md's demo block; the 20-epoch accuracy is in the recipe table)
demo: $(VENV)/.installed data
	$(VENV)/bin/edgecnn run recipes/lenet5-fashion.yaml --target host --epochs 8

test: $(VENV)/.dev data test-tools
	$(PY) -m pytest $(PYTEST_ARGS)
	# the install a user makes: the wheel in a fresh venv, from a folder outside the checkout (slow-marked)
	$(PY) -m pytest -m slow tests/test_packaging.py
	# the board side under Python 3.10 with edgecnn[board] only (packages from PyPI)
	.ci/board310
	# the README's commands, as written (tests/test_readme.py, slow-marked: minutes)
	$(PY) -m pytest -m slow tests/test_readme.py
