"""The CUDA paths, where a GPU is (skipped elsewhere: `needs_cuda`, tests/conftest.py).

Each test compares the GPU with the CPU on the same weights and data (fp32, TF32 off, so the two
agree to rounding), or checks what only a GPU run does (bf16 autocast, NCCL, pinned copies, a
checkpoint written on the GPU and read on a machine without one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from cebench.cli import main as cebench
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.train import run
from tests._train_helpers import tiny_config, write_images

pytestmark = pytest.mark.needs_cuda
DEVICE = "cuda"

# fp32 on both sides: TF32 convolutions / matmuls would differ from the CPU by ~1e-3
NO_TF32 = {**os.environ, "NVIDIA_TF32_OVERRIDE": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl")]


# the centre mask and no dropout: nothing drawn from the device's random stream, so the GPU run
# sees the same holes as the CPU run
FP32 = ["train.steps=5", "mask.kind=center", "train.amp=off", "train.sample_every=0"]


def test_fp32_training_on_cuda_tracks_the_cpu(images, tmp_path):
    cpu = run(tiny_config(images, tmp_path / "cpu", [*FP32, "train.device=cpu"]))
    gpu = run(tiny_config(images, tmp_path / "gpu", [*FP32, "train.device=cuda"]))
    a, b = _losses(cpu), _losses(gpu)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4, 5]
    for (step, la), (_, lb) in zip(a, b, strict=True):
        assert lb == pytest.approx(la, rel=1e-3), step
    wa, wb = safe_load(cpu / "checkpoint.pt")["models"], safe_load(gpu / "checkpoint.pt")["models"]
    for part in wa:
        for k, v in wa[part].items():
            assert wb[part][k].device.type == "cpu", (part, k)  # saved for any machine
            assert torch.allclose(v.float(), wb[part][k].float(), atol=1e-4, rtol=1e-3), (part, k)


def test_bf16_autocast_on_cuda_trains_and_the_encoder_loads_on_cpu(images, tmp_path):
    """train.amp=auto is bf16 on CUDA: the loss still goes down, the weights stay fp32, and the
    encoder file is read on a CPU-only machine (map_location cpu) with the same outputs."""
    over = ["train.steps=40", "train.device=cuda", "train.amp=auto", "train.log_every=1"]
    out = run(tiny_config(images, tmp_path / "run", over))
    losses = [loss for _, loss in _losses(out)]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    enc, _ = load_encoder(out / "encoder.pt")
    p = next(enc.parameters())
    assert p.device.type == "cpu" and p.dtype == torch.float32
    x = torch.rand(2, 3, 32, 32)
    enc.eval()
    with torch.no_grad():
        ref = enc.forward_features(x)
        gpu = enc.cuda().forward_features(x.cuda())
    for name, v in ref.items():
        assert torch.allclose(v, gpu[name].cpu(), atol=1e-4, rtol=1e-3), name


def test_resume_on_cuda_continues_the_run(images, tmp_path):
    """3 steps, then --resume to 6: the same losses as 6 steps in one go (to rounding)."""
    over = [*FP32, "train.device=cuda", "train.save_every=3"]
    whole = run(tiny_config(images, tmp_path / "whole", [*over, "train.steps=6"]))
    part = tiny_config(images, tmp_path / "part", [*over, "train.steps=3"])
    run(part)
    # resume as the command line does: only --out, --resume and a longer --steps
    from cebench.pretrain.train import build_config, get_args_parser

    args = ["--out", str(tmp_path / "part"), "--resume", "--steps", "6"]
    run(build_config(get_args_parser().parse_args(args)))
    a, b = _losses(whole), _losses(tmp_path / "part")
    assert [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    for (step, la), (_, lb) in zip(a, b, strict=True):
        assert lb == pytest.approx(la, rel=1e-4), step


def test_torchrun_nccl_on_one_gpu_equals_one_process(images, tmp_path):
    """torchrun with one CUDA process: NCCL group, DDP wrapper, the same run as without torchrun."""
    from tests.test_train_dist import config_file

    cfg = tiny_config(images, tmp_path / "one", [*FP32, "train.device=cuda"])
    single = run(cfg)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += ["-m", "cebench.pretrain.train", "--config", str(config_file(cfg, tmp_path / "c.yaml"))]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], env=NO_TF32, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (step, la), (_, lb) in zip(_losses(single), _losses(out), strict=True):
        assert lb == pytest.approx(la, rel=1e-4), step
    assert safe_load(out / "checkpoint.pt")["world_size"] == 1


@pytest.mark.parametrize(
    "extra",
    [
        ["mask.kind=random-block", "train.amp=off"],  # fp32, both networks
        # bf16, the noise regions, and dropout drawn from the device's generator inside the graph
        ["mask.kind=random-region", "train.amp=bf16", "model.bottleneck_dropout=0.5"],
    ],
)
def test_cuda_graph_step_equals_the_eager_step_on_cuda(
    images, tmp_path, monkeypatch, capsys, extra
):
    """train.cuda_graph=on: 3 eager warm-up steps, a capture, then replays (a checkpoint and a
    sample grid written between replays): the eager run's losses and weights."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    over = ["train.steps=8", "train.save_every=4", "train.sample_every=4", "train.device=cuda"]
    eager = run(tiny_config(images, tmp_path / "eager", [*over, *extra]))
    capsys.readouterr()
    graphed = run(tiny_config(images, tmp_path / "graph", [*over, *extra, "train.cuda_graph=on"]))
    assert "captured as one CUDA graph" in capsys.readouterr().err
    a, b = _losses(eager), _losses(graphed)
    assert [s for s, _ in b] == list(range(1, 9))
    for (step, la), (_, lb) in zip(a, b, strict=True):
        assert lb == pytest.approx(la, rel=1e-6, abs=1e-7), step
    wa = safe_load(eager / "checkpoint.pt")["models"]
    wb = safe_load(graphed / "checkpoint.pt")["models"]
    for part in wa:
        for k, v in wa[part].items():
            torch.testing.assert_close(wb[part][k], v, rtol=1e-6, atol=1e-7, msg=f"{part}.{k}")


def test_frozen_features_on_cuda_equal_the_cpu():
    """The transfer harnesses' feature extraction (fp32) gives the CPU's features on the GPU."""
    from cebench.pretrain.models import build_encoder
    from cebench.transfer.features import compute_features

    torch.manual_seed(0)
    enc = build_encoder("tiny", width=8, depth=4)
    batches = [(torch.rand(4, 3, 48, 48), torch.arange(4)) for _ in range(2)]
    layers = [info.name for info in enc.feature_info]
    cpu, _ = compute_features(enc, batches, layers, 256, torch.device("cpu"))
    gpu, _ = compute_features(enc, batches, layers, 256, torch.device("cuda"))
    for name in layers:
        assert torch.allclose(cpu[name], gpu[name], atol=1e-5, rtol=1e-4), name


def test_default_suite_dry_run_on_cuda(tmp_path):
    """Every cell kind of the default suite (pretraining, inpainting, probes, fine-tuning,
    detection, segmentation) on the GPU: all cells finish, and each records a CUDA device."""
    out = tmp_path / "dry"
    args = ["bench", "--suite", "default", "--dry-run", "--out", str(out), "--jobs", "1"]
    for key in ("pretrain.train.device", "transfer.device", "inpaint.config.device"):
        args += ["--set", f"{key}={DEVICE}"]
    assert cebench(args) == 0
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 56 and not list((out / "cells").glob("*.error.json"))
    devices = {json.loads(p.read_text())["device"] for p in cells}
    assert devices and all(d.startswith(f"{DEVICE}:") for d in devices), devices
