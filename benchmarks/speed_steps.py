"""`cebench speed` (benchmarks/speed.py), study 1: per pretraining configuration, our training step
against the plain reference, the data path, transfer feature extraction and the probe, peak
memory and FLOPs (see benchmarks/speed.py for the table and the JSON keys)."""

from __future__ import annotations

import argparse
import copy
import statistics
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
PAPER_STEPS = (
    100_000  # paper-alexnet's pretraining (Sec. 5.2: about 100k iterations, 14 h on a Titan X)
)


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


def _config(
    name: str, data: Path, out: Path, batch: int | None, device: str, extra: list[str] = ()
) -> Any:
    from cebench.pretrain.config import load_pretrain_config

    over = [
        *extra,
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
    from cebench.pretrain.masks import batch_masks, fill_holes
    from cebench.pretrain.methods.context_encoder import GraphedStep
    from cebench.pretrain.trainer import Trainer, resolve_run

    probe = _config(name, workdir / "none", workdir / f"run-{name}", args.batch_size, args.device)
    b, size = probe.train.batch_size, probe.model.input_size
    load = probe.data.load_size or size
    data = workdir / f"images-{load}"
    if not data.is_dir():  # landscape photos larger than the load size (Paris: 936x537)
        write_images(data, max(2 * b, 16), round(load * 2), round(load * 1.5))
    cfg = _config(name, data, workdir / f"run-{name}", args.batch_size, args.device, args.overrides)
    from cebench.core.device import pick_device

    device = pick_device(cfg.train.device)
    trainer = Trainer(resolve_run(cfg, DistInfo()), device, DistInfo())
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
    compiled, compile_s = None, None
    if args.compile:  # the same run, seed and weights, every network compiled in place
        compiled = Trainer(resolve_run(cfg, DistInfo()), device, DistInfo())
        compiled.pending, compiled.skipped_local = [], 0
        for module in compiled.method.models.values():
            module.compile()
        t = time.perf_counter()
        compiled.train_step(ours_it)  # the first call compiles (forward and backward)
        compiled.pending.clear()
        _sync(device)
        compile_s = time.perf_counter() - t

    def compiled_step() -> None:
        assert compiled is not None
        compiled.train_step(ours_it)
        compiled.pending.clear()
        _sync(device)

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
        if compiled is not None:
            compiled_step()
    graphed = isinstance(trainer.step_fn, GraphedStep)
    while graphed and trainer.step_fn.graph is None:  # its eager warm-up and capture: untimed
        if flops:
            ours_step()
            continue
        with FlopCounterMode(display=False) as fc:  # an eager step: a replay shows no ops
            ours_step()
        flops = fc.get_total_flops()
    # (not under a graph: it holds the optimizer states that load_state_dict would replace)
    if args.warmup == 0 and not graphed:  # count on a copy so the timed steps start the same
        mods = [*trainer.method.models.values(), *trainer.method.optims.values()]
        saved = [copy.deepcopy(m.state_dict()) for m in mods]
        with FlopCounterMode(display=False) as fc:
            ours_step()
        flops = fc.get_total_flops()
        trainer.step -= 1
        for m, state in zip(mods, saved, strict=True):
            m.load_state_dict(state)

    t_ours, t_plain, ratios, mem_ours, mem_plain = [], [], [], 0.0, 0.0
    t_comp, comp_ratios = [], []
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
        if compiled is not None:
            t = time.perf_counter()
            compiled_step()
            t_comp.append(time.perf_counter() - t)
            comp_ratios.append(t_ours[-1] / t_comp[-1])
    ours_s = statistics.median(t_ours)
    plain_s = statistics.median(t_plain) if t_plain else None

    # data loading alone: loader batches + the masks and hole filling the step does on the device.
    # A fresh loader (the first one's workers prefetched during the timed steps), its head start
    # taken untimed (_skip_prefetched), then 8+ batches in a row.
    del it, loader
    workers = trainer.loader_workers
    it = iter(trainer._loader())
    _skip_prefetched(it, workers)
    n_data = max(8, args.steps, 2 * workers)
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
        "compile_s": round(compile_s, 2) if compile_s is not None else None,
        "compiled_step_s": round(statistics.median(t_comp), 4) if t_comp else None,
        "compiled_speedup": round(statistics.median(comp_ratios), 3) if comp_ratios else None,
        "cuda_graph": "graph" if graphed else "eager",
        "decode": cfg.data.decode,
        "wall_100k_h": round(PAPER_STEPS * ours_s / 3600, 2),
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


# ----- the machine's matmul peak
def measure_peak(device: torch.device, reps: int = 5) -> dict[str, Any]:
    """bf16 and fp32 TFLOP/s of one large square matmul (best of `reps`), the yardstick for each
    configuration's TFLOP/s (`of_bf16_peak`, `of_fp32_peak`)."""
    n = 8192 if device.type == "cuda" else 2048
    out: dict[str, Any] = {"n": n, "reps": reps}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        _sync(device)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - t)
        out[name] = round(2 * n**3 / best / 1e12, 4)
    return out


def _skip_prefetched(it: Any, workers: int) -> None:
    """Take, untimed, the first batch (it starts the workers) and the batches the workers decoded
    meanwhile: each holds `prefetch_factor` (2) in flight. Timing them would measure that head
    start, not the rate: with 15 workers and 10 timed batches, a GPU machine read 5992 img/s
    where 4 and 8 workers read 426 and 913."""
    for _ in range(1 + 2 * workers):
        next(it)


# ----- output
def format_table(results: dict[str, dict[str, Any]]) -> str:
    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    head = (
        "| config | batch | amp | step | ours img/s | step ms | 100k steps (h) | plain img/s "
        "| ours/plain | data img/s | data/train | peak mem ours / plain (GiB) | TFLOP/s "
        "| of matmul peak | features img/s | probe s |"
    )
    rows = [head, "|" + "---|" * 16]
    for name, r in results.items():
        step = r["cuda_graph"] + (", device decode" if r["decode"] == "device" else "")
        rows.append(
            f"| {name} | {r['batch_size']} | {r['amp']} | {step} | {f(r['ours_img_per_s'])} | "
            f"{f(1000 * r['ours_step_s'])} | {f(r['wall_100k_h'], 2)} | "
            f"{f(r['plain_img_per_s'])} | {f(r['ratio'], 2)} | {f(r['data_img_per_s'])} | "
            f"{f(r['data_over_train'], 1)} | {f(r['ours_peak_mem_gib'], 2)} / "
            f"{f(r['plain_peak_mem_gib'], 2)} | {f(r['ours_tflops'], 3)} | {_of_peak(r)} | "
            f"{f(r['features_img_per_s'])} | {f(r['probe_s'], 2)} ({r['probe_epochs']} ep) |"
        )
    return "\n".join(rows)


def _of_peak(r: dict[str, Any]) -> str:
    """The configuration's TFLOP/s over the matmul peak of its own precision (the other one
    in brackets)."""
    own, other = ("bf16", "fp32") if r["amp"] == "bf16" else ("fp32", "bf16")
    if r.get(f"of_{own}_peak") is None:
        return "-"
    return f"{100 * r[f'of_{own}_peak']:.0f}% {own} ({100 * r[f'of_{other}_peak']:.0f}% {other})"
