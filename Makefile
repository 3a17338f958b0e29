# The two commands of the README. Both create the virtual environment on first use.
#   make lab   - set everything up and open the course in JupyterLab
#   make test  - set everything up and run every test (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: lab test bench clean

$(STAMP): pyproject.toml constraints.txt plugins/pruneplug-fpgm/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned by constraints.txt: never let an install pull another build
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	# the example third-party plugin, installed as a user would (discovered via its entry point)
	$(PY) -m pip install --quiet -c constraints.txt --no-deps -e plugins/pruneplug-fpgm
	touch $@

lab: $(STAMP)
	$(VENV)/bin/pruneplug course

# The course runs twice against the same stored notebooks, so what they store must not depend on
# the machine: once with this CPU's native vector kernels and 2 threads (with the other tests),
# once with ATen, oneDNN and MKL held to their baseline instruction sets and 1 thread.
# Each run keeps its own TorchInductor cache: the cache's keys ignore ATEN_CPU_CAPABILITY, so a
# kernel generated for one instruction set would be reused under the other, where it fails to
# build (AVX-512 code under the baseline) or runs wrong or corrupts memory (AVX-512 vs AVX2).
INDUCTOR_CACHE    = $(abspath $(VENV))/inductor-cache
NATIVE_NUMERICS   = OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR="$(INDUCTOR_CACHE)/native"
PORTABLE_NUMERICS = OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 \
                    MKL_ENABLE_INSTRUCTIONS=SSE4_2 TORCHINDUCTOR_CACHE_DIR="$(INDUCTOR_CACHE)/portable"

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(NATIVE_NUMERICS) $(PY) -m pytest
	$(PORTABLE_NUMERICS) $(PY) -m pytest course

bench: $(STAMP)
	$(VENV)/bin/pruneplug bench pruning
	$(VENV)/bin/pruneplug bench augment
	$(VENV)/bin/pruneplug bench widgets
	$(VENV)/bin/pruneplug bench deploy
	$(VENV)/bin/pruneplug bench attention

clean:
	rm -rf $(VENV) build *.egg-info
