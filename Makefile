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

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/pruneplug bench pruning
	$(VENV)/bin/pruneplug bench augment
	$(VENV)/bin/pruneplug bench widgets

clean:
	rm -rf $(VENV) build *.egg-info
