"""`cebench speed --photos` (benchmarks/speed.py), study 2: the `small` config's training rate on
camera-sized files against the data loader decoding them (full size, draft, prepared, device)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.benchmarks.speed_steps import _config, _Repeat, _skip_prefetched, _sync, write_images

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


def measure_photos(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The `small` config on a folder of camera-sized photos: its training rate (steps on one
    preloaded batch) against data loading with the default workers, decoding the files at full
    size (plain), in JPEG draft mode (draft, what training does) and from `cebench data prepare`'s
    copy at the load size (prepared); and the preparation's own rate (one process, from scratch)."""
    import shutil

    from cebench.core.device import pick_device
    from cebench.core.distributed import DistInfo
    from cebench.data.prepare import prepare
    from cebench.pretrain.trainer import Trainer, resolve_run

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
    trainer = Trainer(resolve_run(cfg, DistInfo()), pick_device(cfg.train.device), DistInfo())
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
