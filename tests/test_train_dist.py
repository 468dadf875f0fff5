"""Training in other processes: torchrun DDP == one process, SIGKILL / SIGTERM then resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cebench.core.config import to_dict
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.pretrain.train import run
from tests._train_helpers import tiny_config, write_images

ROOT = Path(__file__).resolve().parents[1]
# subprocesses use the test process's thread count: bit-exact comparisons need the same float
# reduction order as the in-process reference runs
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


def config_file(cfg, path: Path) -> Path:
    data = to_dict(cfg)
    data["train"].pop("out")
    data["train"].pop("resume")
    path.write_text(yaml.safe_dump(data))
    return path


def train_cmd(cfg_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cebench.pretrain.train",
        "--config",
        str(cfg_file),
        "--out",
        str(out),
        *extra,
    ]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_two_process_ddp_equals_one_process(images, tmp_path):
    """gloo on CPU; per-process batch 2 x 2 processes vs batch 4 in one process. BatchNorm is
    synchronised over processes (GlobalBatchNorm), L_rec normalised over the global batch."""
    cfg = tiny_config(
        images,
        tmp_path / "one",
        ["train.steps=4", "mask.kind=random-region", "train.sample_every=0"],
    )
    single = run(cfg)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "cebench.pretrain.train",
        "--config",
        str(config_file(cfg, tmp_path / "c.yaml")),
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        cmd, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_jsonl(single / "metrics.jsonl"), read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "loss_rec", "loss_adv_g", "loss_d"):
            assert abs(ra[k] - rb[k]) < 1e-5, (ra["step"], k, ra[k], rb[k])
    wa, wb = (
        safe_load(single / "checkpoint.pt")["models"],
        safe_load(out / "checkpoint.pt")["models"],
    )
    for part in wa:
        for k, v in wa[part].items():
            assert torch.allclose(v.float(), wb[part][k].float(), atol=1e-5, rtol=1e-4), (part, k)
    assert safe_load(out / "checkpoint.pt")["world_size"] == 2


def test_sigterm_then_sigkill_then_resume_gives_the_uninterrupted_weights(images, tmp_path):
    """SIGTERM: the step finishes, a checkpoint is saved, exit status 143. SIGKILL of the resumed
    run: the newest checkpoint survives. The last resume ends bit-identical to an uninterrupted run."""
    cfg = tiny_config(
        images, tmp_path / "x", ["train.steps=100000", "train.save_every=2", "train.sample_every=0"]
    )
    out, cfg_file = tmp_path / "run", config_file(cfg, tmp_path / "c.yaml")
    proc = subprocess.Popen(train_cmd(cfg_file, out), env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by signal 15" in err and "--resume" in err
    s1 = safe_load(out / "checkpoint.pt")["step"]
    assert read_jsonl(out / "metrics.jsonl")[-1]["step"] == s1  # stopped right after saving

    proc = subprocess.Popen(
        train_cmd(cfg_file, out, "--resume"), env=ENV, stderr=subprocess.PIPE, text=True
    )
    t0 = time.time()
    while not any(r["step"] >= s1 + 3 for r in read_jsonl(out / "metrics.jsonl")):
        assert proc.poll() is None and time.time() - t0 < 60, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    s2 = safe_load(out / "checkpoint.pt")["step"]
    assert s2 > s1

    target = s2 + 3
    resumed = run(tiny_config(images, out, [f"train.steps={target}", "train.resume=true"]))
    ref = run(
        tiny_config(
            images,
            tmp_path / "ref",
            [f"train.steps={target}", "train.save_every=2", "train.sample_every=0"],
        )
    )
    rows, ref_rows = read_jsonl(resumed / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, target + 1))  # no duplicates after truncation
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    got, want = (
        safe_load(resumed / "checkpoint.pt")["models"],
        safe_load(ref / "checkpoint.pt")["models"],
    )
    for part in want:
        for k in want[part]:
            assert torch.equal(got[part][k], want[part][k]), (part, k)
