"""`cebench speed`: how fast the suite pretrains, loads data and evaluates, vs a plain reference.

    cebench speed                                   # both paper configurations, table on stdout
    cebench speed --json                            # + one final JSON line (keys below)
    cebench speed --configs paper-inpainting --steps 5 --warmup 1
    cebench speed --threads 1                       # stable ratios on a shared, busy CPU
    cebench speed --json --steps 1 --warmup 0 --configs small --batch-size 4   # seconds (tests)

For each configuration (named pretraining configs: "paper-inpainting" = 128 px, batch 64, 4000-d
bottleneck, joint loss; "paper-alexnet" = 227 px AlexNet, random-region masks; "small" = the
64 px small-dcgan config) it measures, in one process:

- ours: full training steps (masks, discriminator and generator forward, backward, Adam) through
  `cebench.pretrain.trainer.Trainer.train_step`, the code `cebench pretrain` runs, with the config's own
  precision/layout options (resolved `train.amp`);
- plain: the same step written plainly (`cebench.benchmarks.plain_reference.PlainStep`: eager fp32, masks
  per sample in a Python loop on the CPU, default layouts, default Adam), from the same initial
  weights on the same batch. Repetitions alternate ours / plain so machine noise hits both; the
  ratio is the median of the per-repetition ratios plain_time / ours_time;
- data: the training DataLoader (default workers) + on-device masks and hole filling, alone;
- transfer: frozen feature extraction (`cebench.transfer.features.compute_features`) and the linear probe
  on cached features (`cebench.transfer.classify.train_linear_probe`);
- peak memory of a step (CUDA: max_memory_allocated; CPU: the process's peak RSS, VmHWM, reset
  before each step) and FLOPs per step (FlopCounterMode), so TFLOP/s / device peak = utilisation.

Images are synthetic (smooth random JPEGs, 2 x 1.5 times the config's load size, so the data path
decodes and resizes as on real photos), written to a temporary directory: nothing is downloaded.

JSON (last line with --json): {"date", "device", "torch", "threads", "git_commit",
"configs": {NAME: {"batch_size", "input_size", "amp", "channels_last", "steps", "ours_step_s",
"plain_step_s", "ours_img_per_s", "plain_img_per_s", "ratio", "loss_ours", "loss_plain",
"flops_per_step", "ours_tflops", "ours_peak_mem_gib", "plain_peak_mem_gib", "mem_kind",
"data_workers", "data_img_per_s", "data_over_train", "features_img_per_s", "probe_images",
"probe_epochs", "probe_s"}}}. Times are seconds, memory GiB; null where not measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIGS = {
    "paper-inpainting": "paper-inpainting",
    "paper-alexnet": "paper-alexnet",
    "small": "small-dcgan",
}
DEFAULT_CONFIGS = ["paper-inpainting", "paper-alexnet"]
CPU_MEMORY_LIMIT_GIB = 8.0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training / data / transfer throughput of the suite vs a plain reference step.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=sorted(CONFIGS))
    p.add_argument(
        "--steps", type=int, default=2, help="timed repetitions (each: 1 ours + 1 plain step)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each before timing")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    p.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's); 1 gives stable ratios on a busy machine",
    )
    return p


# ----- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_gib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20, "rss_peak"
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss_peak_process"


def write_images(folder: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """`n` smooth random JPEGs (low-frequency colour fields, like photos in compressibility)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        low = torch.rand(1, 3, 6, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(height, width), mode="bicubic")
        arr = (img[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / f"{i:05d}.jpg", quality=90)


class _Repeat:
    """An endless iterator over one preloaded batch (both steps see the same images)."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor, int]) -> None:
        self.batch = batch

    def __iter__(self) -> _Repeat:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.batch


def _config(name: str, data: Path, out: Path, batch: int | None, device: str) -> Any:
    from cebench.pretrain.config import load_pretrain_config

    over = [
        f"data.path={data}",
        f"train.out={out}",
        "train.sample_every=0",
        f"train.device={device}",
    ]
    if batch:
        over.append(f"train.batch_size={batch}")
    return load_pretrain_config(CONFIGS[name], over)


# ----- one configuration
def measure_config(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from cebench.benchmarks.plain_reference import PlainStep
    from cebench.core.distributed import DistInfo
    from cebench.pretrain.masks import fill_holes
    from cebench.pretrain.steps import batch_masks
    from cebench.pretrain.trainer import Trainer

    probe = _config(name, workdir / "none", workdir / f"run-{name}", args.batch_size, args.device)
    b, size = probe.train.batch_size, probe.model.input_size
    load = probe.data.load_size or size
    data = workdir / f"images-{load}"
    if not data.is_dir():  # landscape photos larger than the load size (Paris: 936x537)
        write_images(data, max(2 * b, 16), round(load * 2), round(load * 1.5))
    cfg = _config(name, data, workdir / f"run-{name}", args.batch_size, args.device)
    from cebench.core.device import pick_device

    device = pick_device(cfg.train.device)
    trainer = Trainer(cfg, device, DistInfo())
    trainer.pending, trainer.skipped_local = [], 0  # what Trainer.train() sets before its loop
    cfg = trainer.cfg  # resolved (lr, fill value)
    loader = trainer._loader()
    it = iter(loader)
    images, labels, _ = next(it)  # workers started: the data timing below is steady state
    batch = (images, labels, 0)
    ours_it = _Repeat(batch)
    plain = None
    if not args.no_plain:
        plain = PlainStep.from_config(cfg, device)

    def ours_step() -> float:
        trainer.train_step(ours_it)
        m = trainer.pending.pop()[1]
        _sync(device)
        return float(m["loss"])

    def plain_step() -> float:
        assert plain is not None
        loss = plain.step(images)["loss"]
        _sync(device)
        return loss

    flops = 0
    for i in range(args.warmup):
        if i == 0:
            with FlopCounterMode(display=False) as fc:
                ours_step()
            flops = fc.get_total_flops()
        else:
            ours_step()
        if plain is not None:
            plain_step()
    if args.warmup == 0:  # count on a copy so the timed steps start from the same state
        mods = [*trainer.method.models.values(), *trainer.method.optims.values()]
        saved = [copy.deepcopy(m.state_dict()) for m in mods]
        with FlopCounterMode(display=False) as fc:
            ours_step()
        flops = fc.get_total_flops()
        trainer.step -= 1
        for m, state in zip(mods, saved, strict=True):
            m.load_state_dict(state)

    t_ours, t_plain, ratios, mem_ours, mem_plain = [], [], [], 0.0, 0.0
    loss_ours = loss_plain = None
    mem_kind = ""
    for _ in range(args.steps):
        _reset_peak(device)
        t = time.perf_counter()
        loss_ours = ours_step()
        t_ours.append(time.perf_counter() - t)
        peak, mem_kind = _peak_gib(device)
        mem_ours = max(mem_ours, peak)
        if plain is not None:
            _reset_peak(device)
            t = time.perf_counter()
            loss_plain = plain_step()
            t_plain.append(time.perf_counter() - t)
            mem_plain = max(mem_plain, _peak_gib(device)[0])
            ratios.append(t_plain[-1] / t_ours[-1])
    ours_s = statistics.median(t_ours)
    plain_s = statistics.median(t_plain) if t_plain else None

    # data loading alone: loader batches + the masks and hole filling the step does on the device.
    # A fresh loader (the first one's workers prefetched during the timed steps); its first batch
    # starts the workers, then 8+ batches in a row: the prefetch head start is at most ~1 batch.
    del it, loader
    it = iter(trainer._loader())
    next(it)
    n_data = max(8, args.steps)
    fill = trainer.method.fill
    t = time.perf_counter()
    for k in range(n_data):
        imgs, _, _ = next(it)
        imgs = imgs.to(device, non_blocking=True)
        hole = batch_masks(
            cfg.mask.kind,
            size=size,
            region=cfg.mask.region or size // 2,
            overlap=cfg.mask.overlap,
            coverage=cfg.mask.coverage,
            step=k,
            seed=cfg.train.seed,
            global_batch=b,
            rank=0,
            world_size=1,
            device=device,
        )
        fill_holes(imgs, hole, fill)
    _sync(device)
    data_rate = n_data * b / (time.perf_counter() - t)
    del it
    workers = cfg.data.workers if cfg.data.workers >= 0 else min(4, os.cpu_count() or 1)

    feat_rate, probe_s = _transfer(trainer.method.encoder()[0], images, device, args.probe_epochs)
    ours_rate = b / ours_s
    return {
        "batch_size": b,
        "input_size": size,
        "amp": "bf16" if trainer.bf16 else "fp32",
        "channels_last": bool(cfg.train.channels_last),
        "steps": args.steps,
        "ours_step_s": round(ours_s, 4),
        "plain_step_s": round(plain_s, 4) if plain_s else None,
        "ours_img_per_s": round(ours_rate, 2),
        "plain_img_per_s": round(b / plain_s, 2) if plain_s else None,
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
        "loss_ours": loss_ours,
        "loss_plain": loss_plain,
        "flops_per_step": flops,
        "ours_tflops": round(flops / ours_s / 1e12, 6),
        "ours_peak_mem_gib": round(mem_ours, 3),
        "plain_peak_mem_gib": round(mem_plain, 3) if plain is not None else None,
        "mem_kind": mem_kind,
        "data_workers": workers,
        "data_img_per_s": round(data_rate, 2),
        "data_over_train": round(data_rate / ours_rate, 2),
        "features_img_per_s": round(feat_rate, 2),
        "probe_images": 4 * len(images),
        "probe_epochs": args.probe_epochs,
        "probe_s": round(probe_s, 3),
    }


def _transfer(
    encoder: torch.nn.Module, images: torch.Tensor, device: torch.device, epochs: int
) -> tuple[float, float]:
    """(feature extraction images/s of the frozen encoder's last stage, linear-probe seconds on
    the cached features of 4 batches with 5 random classes)."""
    from cebench.transfer.classify import ClassifyConfig, train_linear_probe
    from cebench.transfer.features import compute_features

    enc = copy.deepcopy(encoder)
    layer = enc.feature_info[-1].name
    batches = [(images, torch.zeros(len(images), dtype=torch.long))] * 4
    compute_features(enc, batches[:1], [layer], 9216, device)  # warm-up
    _sync(device)
    t = time.perf_counter()
    feats, _ = compute_features(enc, batches, [layer], 9216, device)
    _sync(device)
    rate = 4 * len(images) / (time.perf_counter() - t)
    x = feats[layer]
    y = torch.arange(len(x)) % 5
    t = time.perf_counter()
    train_linear_probe(x, y, 5, ClassifyConfig(probe_epochs=epochs))
    return rate, time.perf_counter() - t


# ----- output
def format_table(results: dict[str, dict[str, Any]]) -> str:
    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    head = (
        "| config | batch | amp | ours img/s | plain img/s | ours/plain | data img/s | data/train "
        "| peak mem ours / plain (GiB) | TFLOP/s | features img/s | probe s |"
    )
    rows = [head, "|" + "---|" * 12]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['batch_size']} | {r['amp']} | {f(r['ours_img_per_s'])} | "
            f"{f(r['plain_img_per_s'])} | {f(r['ratio'], 2)} | {f(r['data_img_per_s'])} | "
            f"{f(r['data_over_train'], 1)} | {f(r['ours_peak_mem_gib'], 2)} / "
            f"{f(r['plain_peak_mem_gib'], 2)} | {f(r['ours_tflops'], 3)} | "
            f"{f(r['features_img_per_s'])} | {f(r['probe_s'], 2)} ({r['probe_epochs']} ep) |"
        )
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    from cebench.core.device import describe, pick_device
    from cebench.core.errors import ConfigError
    from cebench.core.provenance import git_commit

    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(
            f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}"
        )
    for flag in ("batch_size", "threads", "probe_epochs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cebench-speed-") as tmp:
        for name in args.configs:
            print(f"speed: {name} ...", file=sys.stderr, flush=True)
            results[name] = measure_config(name, args, Path(tmp))
    print(format_table(results))
    for name, r in results.items():
        if device.type == "cpu" and r["ours_peak_mem_gib"] > CPU_MEMORY_LIMIT_GIB:
            print(f"note: {name} peaks at {r['ours_peak_mem_gib']:.1f} GiB RSS (> 8 GiB)")
    if args.json:
        out = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": describe(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "git_commit": git_commit(),
            "configs": results,
        }
        print(json.dumps(out))
    return 0
