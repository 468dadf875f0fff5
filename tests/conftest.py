"""Shared fixtures: RNG state restored after every test; small CPU-only settings."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# Tiny models: one intra-op thread is fastest and avoids oversubscription when pytest, data
# workers and DDP processes share 2 cores.
torch.set_num_threads(1)
# ... and the commands run in-process (and their subprocesses) keep it (cebench.core.threads)
os.environ.setdefault("CEBENCH_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs on one torch thread, and a test that changes it gets it back."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)
