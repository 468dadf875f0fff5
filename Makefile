# The README's two commands:
#   make bench   # create .venv, install the suite, run the default benchmark on the built-in data
#   make test    # create or reuse .venv and run the whole (fast) test suite
# and one more for the long tests kept out of the default run:
#   make test-slow
# and the lower end of the supported torch range that this machine can install (README "Two commands"):
#   make test-torch-min

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cebench-installed

.PHONY: bench test test-slow test-torch-min lint install

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/cebench bench --suite default --out results/default --readme README.md

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# torch 2.13.0, a CPU build whose wheel lies on this machine's disk, in its own venv. PyPI's
# torchvision does not run beside that build (its operators are missing), so it is removed and only
# the tests that need no torchvision run: pretraining, methods, masks, losses, the online probe,
# TensorBoard, inpainting, data, core.
TORCH_MIN ?= 2.13.0
MIN_VENV ?= .venv-torch-min
TORCH_MIN_TESTS = tests/test_train.py tests/test_train_loader_faults.py tests/test_methods.py \
	tests/test_methods_ssl.py tests/test_masks.py tests/test_losses.py tests/test_model_init.py \
	tests/test_monitor.py tests/test_tensorboard.py tests/test_inpaint.py tests/test_core.py \
	tests/test_data_images.py tests/test_data_synth.py tests/test_threads.py

test-torch-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	echo "torch==$(TORCH_MIN)" > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/pip install -q -c $(MIN_VENV)/constraints.txt -e '.[dev]'
	$(MIN_VENV)/bin/pip uninstall -q -y torchvision
	$(MIN_VENV)/bin/python -c "import torch; print('torch', torch.__version__)"
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(TORCH_MIN_TESTS) \
		-k "not suite_cell and not transfer_run"

lint: $(STAMP)
	$(VENV)/bin/ruff check cebench pretrain transfer benchmarks tests
