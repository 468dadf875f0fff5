"""A data-loader worker that dies mid-epoch is a clear TrainingError, never a hang."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cebench.core.errors import TrainingError
from cebench.pretrain.trainer import next_batch, stop_workers, worker_death


class _WorkerDies(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        if i == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies, as under the OOM killer
        return torch.zeros(3), torch.tensor(0), 0


def test_dead_worker_is_a_clear_error_not_a_hang():
    loader = DataLoader(_WorkerDies(), batch_size=2, num_workers=1, timeout=60)
    it = iter(loader)
    with pytest.raises(TrainingError, match=r"data-loader worker died at step \d .*--resume"):
        step = 0
        try:
            for step in range(4):  # the worker dies while preparing the third batch
                next_batch(it, step=step, last_saved=0)
        except RuntimeError as e:  # torch's SIGCHLD handler may raise between two next() calls
            died = worker_death(e, step, 0)
            stop_workers(it)
            raise died or e from None
