"""Signals stop the whole suite (issue 14): SIGTERM / SIGINT during a pretraining cell of
`cebench bench` saves that cell's checkpoint, does not mark it failed, runs no further cell and
exits 143 / 130; rerunning the same command resumes the cell from its checkpoint. Real
subprocesses and real signals, in-process cells (--jobs 1) and worker processes (--jobs 2)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CELL = "ce-center.pretrain.s0"


def _start(out: Path, jobs: int, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "cebench", "bench", "--suite", "mini", "--out", str(out)]
    argv += ["--set", "budgets.pretrain_steps=100000", "--jobs", str(jobs)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"never saw {what} (exit {proc.poll()})")
        time.sleep(0.1)


def _steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


# --jobs 2 spawns worker processes (slower): in `make test-slow`
@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_signal_stops_the_suite_and_a_rerun_resumes_the_cell(tmp_path, jobs):
    out, log = tmp_path / "mini", tmp_path / "bench.log"
    run_dir = out / "runs" / CELL
    proc = _start(out, jobs, log)
    _wait_for(lambda: _steps_logged(run_dir) >= 2, proc, "pretraining steps")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()
    err = log.read_text()
    assert "Traceback" not in err and "FAILED" not in err
    assert "stopped by signal 15" in err and "rerun the same command" in err
    assert (run_dir / "checkpoint.pt").is_file()
    cells = out / "cells"
    assert not list(cells.glob("*.json")) if cells.exists() else True  # nothing failed or done
    # the rerun continues the cell from its checkpoint (then is stopped by Ctrl-C)
    log2 = tmp_path / "bench2.log"
    proc = _start(out, jobs, log2)
    _wait_for(lambda: "resuming" in log2.read_text(), proc, "the resume")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log2.read_text()
    err2 = log2.read_text()
    assert f"resuming {run_dir / 'checkpoint.pt'} at step" in err2
    step = int(err2.split(" at step ")[1].split()[0])
    assert step >= 2
    assert "Traceback" not in err2 and not list(cells.glob("*.error.json"))
    suite = json.loads((out / "suite.json").read_text())
    assert suite["name"] == "mini"
