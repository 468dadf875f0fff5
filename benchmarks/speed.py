"""`cebench speed`: how fast the suite pretrains, loads data and evaluates, vs a plain reference.

    cebench speed                                   # both paper configurations, table on stdout
    cebench speed --json                            # + one final JSON line (keys below)
    cebench speed --configs paper-inpainting --steps 5 --warmup 1
    cebench speed --threads 1                       # stable ratios on a shared, busy CPU
    cebench speed --json --steps 1 --warmup 0 --configs small --batch-size 4   # seconds (tests)
    cebench speed --configs none --photos --workdir /tmp/speed   # camera-sized photo folder
    cebench speed --configs none --contention                    # a competing process (minutes)

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
  before each step) and FLOPs per step (FlopCounterMode); its TFLOP/s as a fraction of this
  device's bf16 and fp32 matmul peak, measured in the same run (one large square matmul).

--photos: the `small` config on camera-sized files (6 JPEGs 4000x3000 with sensor-like noise, 2
PNGs 2560x1600; written once into --workdir): its training rate against the training DataLoader
with the default workers decoding them at full size (plain), in JPEG draft mode (draft: what
training does), from `cebench data prepare`'s copy at the load size (prepared), and with
`data.decode: device` (device: the workers read bytes, --device decodes the JPEGs and resizes,
crops and flips the batch; the PNGs go through the workers), and the copy's own cost.
`--set train.cuda_graph=on` / `--set data.decode=device` measure the configurations' step as one
CUDA graph / their data path decoded on the device. --contention: `cebench pretrain` (small config) alone and with a second one
competing for the CPUs, for the automatic thread count and one thread, each with passive and
with OpenMP's default wait policy (cebench.core.threads).

Images are synthetic (smooth random JPEGs, 2 x 1.5 times the config's load size, so the data path
decodes and resizes as on real photos), written to a temporary directory: nothing is downloaded.

JSON (last line with --json): {"date", "device", "torch", "threads", "git_commit", "overrides",
"configs": {NAME: {"batch_size", "input_size", "amp", "channels_last", "steps", "ours_step_s",
"plain_step_s", "ours_img_per_s", "plain_img_per_s", "ratio", "loss_ours", "loss_plain",
"flops_per_step", "ours_tflops", "ours_peak_mem_gib", "plain_peak_mem_gib", "mem_kind",
"data_workers", "data_img_per_s", "data_over_train", "features_img_per_s", "probe_images",
"probe_epochs", "probe_s", "compile_s", "compiled_step_s", "compiled_speedup", "of_bf16_peak",
"of_fp32_peak", "cuda_graph", "decode", "wall_100k_h"}}}, with "matmul_peak_tflops": {"n",
"reps", "bf16", "fp32"}, "photos" (--photos) and "contention" (--contention) beside "configs".
Times are seconds, memory GiB; null where not measured.
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
PAPER_STEPS = (
    100_000  # paper-alexnet's pretraining (Sec. 5.2: about 100k iterations, 14 h on a Titan X)
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training / data / transfer throughput of the suite vs a plain reference step.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        choices=[*sorted(CONFIGS), "none"],
        help="configurations for the main table (none: only the cases below)",
    )
    p.add_argument(
        "--photos",
        action="store_true",
        help="also the photo-folder case: 4000x3000 JPEGs and large PNGs, the small config's "
        "training rate vs data loading plain / draft / prepared",
    )
    p.add_argument(
        "--contention",
        action="store_true",
        help="also the slowdown of a cebench pretrain run (small config) with a second one "
        "competing for the CPUs (subprocesses, a few minutes)",
    )
    p.add_argument(
        "--workdir",
        help="keep the generated images here between runs (default: a temporary folder)",
    )
    p.add_argument(
        "--steps", type=int, default=2, help="timed repetitions (each: 1 ours + 1 plain step)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each before timing")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    p.add_argument(
        "--compile",
        action="store_true",
        help="A/B: also time ours with every network compiled (torch.compile, inductor), "
        "interleaved; compile time reported apart",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pretraining config key of every configuration measured (repeatable), "
        "e.g. data.workers=8, train.channels_last=true",
    )
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    p.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: CPUs // jobs, cebench.core.threads); "
        "1 gives stable ratios on a busy machine",
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
    from cebench.pretrain.graph_step import GraphedStep
    from cebench.pretrain.masks import batch_masks, fill_holes
    from cebench.pretrain.trainer import Trainer

    probe = _config(name, workdir / "none", workdir / f"run-{name}", args.batch_size, args.device)
    b, size = probe.train.batch_size, probe.model.input_size
    load = probe.data.load_size or size
    data = workdir / f"images-{load}"
    if not data.is_dir():  # landscape photos larger than the load size (Paris: 936x537)
        write_images(data, max(2 * b, 16), round(load * 2), round(load * 1.5))
    cfg = _config(name, data, workdir / f"run-{name}", args.batch_size, args.device, args.overrides)
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
    compiled, compile_s = None, None
    if args.compile:  # the same run, seed and weights, every network compiled in place
        compiled = Trainer(cfg, device, DistInfo())
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


# ----- a folder of camera-sized photos
PHOTO_JPEGS = 6  # 4000x3000 (12 Mpx), quality 90 with sensor-like noise: about 4 MB each
PHOTO_PNGS = 2  # 2560x1600 wallpapers, lossless: about 10 MB each
PHOTO_JPEG_SIZE, PHOTO_PNG_SIZE = (4000, 3000), (2560, 1600)


def write_photos(folder: Path, seed: int = 0) -> list[Path]:
    """Camera-sized files (cached: kept when already there): smooth colour fields with noise, so
    they compress (and decode) like photos rather than like flat synthetic images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    specs = [(f"{i:02d}.jpg", *PHOTO_JPEG_SIZE) for i in range(PHOTO_JPEGS)]
    specs += [(f"{i + PHOTO_JPEGS:02d}.png", *PHOTO_PNG_SIZE) for i in range(PHOTO_PNGS)]
    rng = np.random.default_rng(seed)
    paths = []
    for name, w, h in specs:
        path = folder / name
        paths.append(path)
        low = torch.from_numpy(rng.uniform(0, 1, (1, 3, 12, 16))).float()
        if path.is_file() and Image.open(path).size == (w, h):
            continue
        img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic")[0]
        arr = img.permute(1, 2, 0).clamp(0, 1).numpy() * 255
        arr += rng.normal(0, 10, arr.shape).astype(np.float32)
        tmp = path.with_name(f".{name}.tmp{path.suffix}")
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(tmp, quality=90)
        os.replace(tmp, path)
    return paths


def _skip_prefetched(it: Any, workers: int) -> None:
    """Take, untimed, the first batch (it starts the workers) and the batches the workers decoded
    meanwhile: each holds `prefetch_factor` (2) in flight. Timing them would measure that head
    start, not the rate: with 15 workers and 10 timed batches, a GPU machine read 5992 img/s
    where 4 and 8 workers read 426 and 913."""
    for _ in range(1 + 2 * workers):
        next(it)


def _data_rate(
    paths: list[Path],
    cfg: Any,
    draft: bool,
    batches: int,
    workers: int,
    device: torch.device | None = None,
) -> float:
    """Images/s of the training DataLoader (`TrainImages` + `StepBatchSampler`, `workers`
    processes) over `paths`, after the workers' head start (`_skip_prefetched`). With `device`:
    `data.decode: device`'s loader (workers read bytes, `device` decodes and augments)."""
    from cebench.core.threads import data_worker_init
    from cebench.pretrain.device_data import device_loader
    from cebench.pretrain.train_data import StepBatchSampler, TrainImages, collate

    ds = TrainImages(
        paths,
        size=cfg.model.input_size,
        load_size=cfg.data.load_size,
        crop=cfg.data.crop,
        flip=cfg.data.flip,
        draft=draft,
    )
    b = cfg.train.batch_size
    sampler = StepBatchSampler(len(ds), b, cfg.train.seed, 0, batches + 1 + 2 * workers)
    kwargs = dict(
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=data_worker_init if workers else None,
    )
    if device is not None:
        loader: Any = device_loader(ds, device, **kwargs)
    else:
        loader = torch.utils.data.DataLoader(ds, collate_fn=collate, **kwargs)
    it = iter(loader)
    _skip_prefetched(it, workers)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    if device is not None:
        _sync(device)
    rate = batches * b / (time.perf_counter() - t)
    del it
    return rate


WORKDIR_MARK = ".cebench-speed"


def _own_workdir(workdir: Path) -> None:
    """Create --workdir, or accept an existing one only if empty or made by `cebench speed`
    (its mark file): speed deletes and rewrites its run folders there, and never a file it did
    not write."""
    from cebench.core.errors import ConfigError

    try:
        if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / WORKDIR_MARK).is_file():
            raise ConfigError(
                f"--workdir {workdir}: holds files cebench speed did not write; choose a new or "
                "empty folder (speed replaces its run folders there)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / WORKDIR_MARK).touch()
    except FileExistsError:
        raise ConfigError(f"--workdir {workdir}: is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"--workdir {workdir}: {e.strerror or e}") from None


def measure_photos(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The `small` config on a folder of camera-sized photos: its training rate (steps on one
    preloaded batch) against data loading with the default workers, decoding the files at full
    size (plain), in JPEG draft mode (draft, what training does) and from `cebench data prepare`'s
    copy at the load size (prepared); and the preparation's own rate (one process, from scratch)."""
    import shutil

    from cebench.core.device import pick_device
    from cebench.core.distributed import DistInfo
    from cebench.data.prepare import prepare
    from cebench.pretrain.trainer import Trainer

    files = write_photos(workdir / "photos")
    probe = _config("small", workdir / "none", workdir / "run-photos", args.batch_size, args.device)
    b, load = probe.train.batch_size, probe.data.load_size or probe.model.input_size
    small = workdir / f"images-{load}"
    if not small.is_dir():
        write_images(small, max(2 * b, 16), round(load * 2), round(load * 1.5))
    cfg = _config(
        "small", small, workdir / "run-photos", args.batch_size, args.device, args.overrides
    )
    shutil.rmtree(workdir / "run-photos", ignore_errors=True)
    trainer = Trainer(cfg, pick_device(cfg.train.device), DistInfo())
    trainer.pending, trainer.skipped_local = [], 0
    images, labels, _ = next(iter(trainer._loader()))
    batch = _Repeat((images, labels, 0))
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        trainer.train_step(batch)
        trainer.pending.clear()
        _sync(trainer.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    train_rate = b / statistics.median(times)

    prepared = workdir / f"photos-{load}"
    shutil.rmtree(prepared, ignore_errors=True)
    t = time.perf_counter()
    prepare(workdir / "photos", prepared, load)
    prepare_s = time.perf_counter() - t
    # the file list cycled to two global batches (the sampler needs at least one)
    n = max(2 * b, len(files))
    src = [files[i % len(files)] for i in range(n)]
    dst = [prepared / p.name for p in src]
    workers = trainer.loader_workers
    slow = max(2, min(args.steps, 4))  # full-size decoding takes seconds per batch
    rates = {
        "plain": _data_rate(src, cfg, False, slow, workers),
        "draft": _data_rate(src, cfg, True, slow, workers),
        "prepared": _data_rate(dst, cfg, True, max(8, args.steps), workers),
        "device": _data_rate(src, cfg, True, slow, workers, device=trainer.device),
    }
    mpx = [_megapixels(p) for p in files]
    return {
        "config": "small",
        "batch_size": b,
        "load_size": load,
        "files": len(files),
        "jpeg_size": list(PHOTO_JPEG_SIZE),
        "png_size": list(PHOTO_PNG_SIZE),
        "jpegs": PHOTO_JPEGS,
        "pngs": PHOTO_PNGS,
        "median_mpx": round(statistics.median(mpx), 2),
        "mbytes": round(sum(p.stat().st_size for p in files) / 1e6, 1),
        "data_workers": workers,
        "decode_device": trainer.device.type,
        "train_img_per_s": round(train_rate, 2),
        **{f"data_{k}_img_per_s": round(v, 2) for k, v in rates.items()},
        **{f"data_{k}_over_train": round(v / train_rate, 2) for k, v in rates.items()},
        "prepare_s": round(prepare_s, 2),
        "prepare_img_per_s": round(len(files) / prepare_s, 2),
    }


def _megapixels(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0] * im.size[1] / 1e6


# ----- a competing process
CONTENTION_STEPS = (10, 30)  # the measured run's steps: timed from the first to the second


def _pretrain_argv(data: Path, out: Path, steps: int, log_every: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from cebench.cli import main; sys.exit(main(sys.argv[1:]))",
        "pretrain",
        "--config",
        CONFIGS["small"],
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--out",
        str(out),
        "train.sample_every=0",
        f"train.save_every={steps}",
        f"train.log_every={log_every}",
    ]


def _seconds_per_step(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["time"] for r in rows}
    a, b = CONTENTION_STEPS
    return (t[b] - t[a]) / (b - a)


def _one_run(data: Path, work: Path, env: dict[str, str], competitor: bool) -> tuple[float, str]:
    """(seconds per step of a measured `cebench pretrain` run, its 'threads:' line), alone or
    while a second identical run trains (started first, stopped when the measured one ends)."""
    import shutil
    import subprocess

    for d in ("measured", "competitor"):
        shutil.rmtree(work / d, ignore_errors=True)
    other = None
    if competitor:
        other = subprocess.Popen(
            _pretrain_argv(data, work / "competitor", 100_000, 1),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while not (work / "competitor" / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.5)  # training has started (one step logged)
    try:
        done = subprocess.run(
            _pretrain_argv(data, work / "measured", CONTENTION_STEPS[1], CONTENTION_STEPS[0]),
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        if other is not None:
            other.terminate()
            other.wait()
    if done.returncode != 0:
        raise RuntimeError(f"cebench pretrain failed: {done.stderr.strip()[-500:]}")
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("threads:")), "")
    return _seconds_per_step(work / "measured"), line


def measure_contention(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The `small` config's `cebench pretrain` (default workers) alone and with a second such
    run competing, for the thread choices x OpenMP wait policies below; alone and competing runs
    alternate, each variant `max(1, --steps // 2)` times; the slowdown is the median competing
    time over the median alone time (seconds per step between steps 10 and 30)."""
    probe = _config("small", workdir / "none", workdir / "none", None, "cpu")
    load = probe.data.load_size or probe.model.input_size
    data = workdir / f"images-{load}"
    if not data.is_dir():
        write_images(data, 2 * probe.train.batch_size, round(load * 2), round(load * 1.5))
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "CEBENCH_", "_CEBENCH"))
    }
    variants = {
        "auto threads, passive OpenMP (default)": {},
        "auto threads, OpenMP's default wait": {"CEBENCH_OMP_PASSIVE": "0"},
        "1 thread, passive OpenMP": {"CEBENCH_THREADS": "1"},
        "1 thread, OpenMP's default wait": {"CEBENCH_THREADS": "1", "CEBENCH_OMP_PASSIVE": "0"},
    }
    reps = max(1, args.steps // 2)
    out: dict[str, Any] = {"config": "small", "steps": list(CONTENTION_STEPS), "reps": reps}
    work = workdir / "contention"
    work.mkdir(parents=True, exist_ok=True)
    for name, extra in variants.items():
        env = {**base, **extra}
        alone, competing, line = [], [], ""
        for _ in range(reps):
            s, line = _one_run(data, work, env, False)
            alone.append(s)
            competing.append(_one_run(data, work, env, True)[0])
        a, c = statistics.median(alone), statistics.median(competing)
        out[name] = {
            "threads": int(line.split()[1]) if line else None,
            "alone_step_s": round(a, 4),
            "competing_step_s": round(c, 4),
            "slowdown": round(c / a, 2),
        }
    return out


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


def format_photos(r: dict[str, Any]) -> str:
    head = (
        f"photo folder: {r['files']} files ({r['jpegs']} JPEG {'x'.join(map(str, r['jpeg_size']))}, "
        f"{r['pngs']} PNG {'x'.join(map(str, r['png_size']))}, {r['mbytes']} MB), `{r['config']}` config (load size {r['load_size']}, "
        f"batch {r['batch_size']}), {r['data_workers']} data workers\n\n"
        "| data path | data img/s | training img/s | data/train |\n|---|---|---|---|"
    )
    rows = [head]
    for k in ("plain", "draft", "prepared", "device"):
        rows.append(
            f"| {k} | {r[f'data_{k}_img_per_s']:.1f} | {r['train_img_per_s']:.1f} | "
            f"{r[f'data_{k}_over_train']:.2f} |"
        )
    rows.append(
        f"\ndevice: the workers read bytes, {r['decode_device']} decodes the JPEGs and resizes / "
        "crops / flips the batch (data.decode=device); the PNGs are decoded by the workers"
    )
    rows.append(
        f"\npreparing the copy (cebench data prepare, 1 process): {r['prepare_s']:.1f} s, "
        f"{r['prepare_img_per_s']:.1f} images/s"
    )
    return "\n".join(rows)


def format_contention(r: dict[str, Any]) -> str:
    a, b = r["steps"]
    rows = [
        f"competing process: `cebench pretrain --config small-dcgan` alone vs with a second one "
        f"running, s/step over steps {a}-{b}, median of {r['reps']}\n",
        "| variant | threads | alone s/step | competing s/step | slowdown |",
        "|---|---|---|---|---|",
    ]
    for name, v in r.items():
        if isinstance(v, dict):
            rows.append(
                f"| {name} | {v['threads']} | {v['alone_step_s']:.3f} | "
                f"{v['competing_step_s']:.3f} | {v['slowdown']:.2f}x |"
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
    from cebench.core.threads import set_threads, threads_note

    device = pick_device(args.device)
    configs = [c for c in args.configs if c != "none"]
    if not (configs or args.photos or args.contention):
        raise ConfigError("--configs none: nothing to measure (add --photos or --contention)")
    results: dict[str, dict[str, Any]] = {}
    photos = contention = None
    if args.workdir:
        _own_workdir(Path(args.workdir))
    # the data timings measure decoding, as a dataset larger than the decoded-file cache pays it
    # (cebench.data.images); the few files measured here would otherwise be decoded once
    os.environ.setdefault("CEBENCH_IMAGE_CACHE_MB", "0")
    set_threads(args.threads)  # after every check: the line below is the run's first
    if note := threads_note():
        print(note, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="cebench-speed-") as tmp:
        work = Path(args.workdir or tmp)
        peak = measure_peak(device) if configs else {}
        for name in configs:
            print(f"speed: {name} ...", file=sys.stderr, flush=True)
            results[name] = measure_config(name, args, work)
            for prec in ("bf16", "fp32"):
                if peak.get(prec):
                    results[name][f"of_{prec}_peak"] = round(
                        results[name]["ours_tflops"] / peak[prec], 4
                    )
        if args.photos:
            print("speed: photos ...", file=sys.stderr, flush=True)
            photos = measure_photos(args, work)
        if args.contention:
            print("speed: contention ...", file=sys.stderr, flush=True)
            contention = measure_contention(args, work)
    if results:
        print(format_table(results))
    if peak:
        print(
            f"matmul peak (one {peak['n']}x{peak['n']} matmul, best of {peak['reps']}): "
            f"bf16 {peak['bf16']:.3f} TFLOP/s, fp32 {peak['fp32']:.3f} TFLOP/s"
        )
    for name, r in results.items():
        if r["compile_s"] is not None:
            print(
                f"torch.compile ({name}): {r['compile_s']:.1f} s to compile, then "
                f"{r['compiled_step_s']:.3f} s/step vs {r['ours_step_s']:.3f} eager "
                f"(x{r['compiled_speedup']:.2f})"
            )
    if photos:
        print(format_photos(photos))
    if contention:
        print(format_contention(contention))
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
            "overrides": args.overrides,
            "configs": results,
            "matmul_peak_tflops": peak or None,
            "photos": photos,
            "contention": contention,
        }
        print(json.dumps(out))
    return 0
