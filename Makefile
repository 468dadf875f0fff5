# The README's two commands:
#   make bench   # create .venv, install the suite, run the default benchmark on the built-in data
#   make test    # create or reuse .venv and run the whole (fast) test suite
# and one more for the long tests kept out of the default run:
#   make test-slow

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cebench-installed

.PHONY: bench test test-slow lint install

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/cebench bench --suite default --out results/default

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check cebench pretrain transfer benchmarks tests
