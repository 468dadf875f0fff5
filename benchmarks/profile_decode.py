"""Where `data.decode: device`'s time goes, stage by stage, for one configuration's JPEGs.

    python -m cebench.benchmarks.profile_decode --config paper-inpainting --device cuda
    python -m cebench.benchmarks.profile_decode --config small --batch-size 8 --batches 2   # CPU

Writes `cebench speed`'s synthetic JPEGs (twice the config's load size, landscape), then times,
in img/s over `--batches` batches after one untimed batch:
- `read`: the loader alone (workers read each file's bytes and header, the main process gets
  the batch's items), nothing decoded;
- `decode`: one batched `decode_jpeg` on the device (nvJPEG on CUDA) of a batch already read;
- `decode_threads`: the same batch split over `--threads` threads, one `decode_jpeg` each;
- `resize_crop_flip`: the batched resize, crops and flips of a decoded batch;
- `decoder`: `DeviceDecoder` on a batch already read (decode + resize/crop/flip + labels);
- `loader`: the whole `data.decode: device` loader (what `cebench speed`'s data rate times).
The slowest stage is the loader's limit; benchmarks/gpu_check.sh runs this on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch


def get_args_parser() -> argparse.ArgumentParser:
    from cebench.benchmarks.speed_steps import CONFIGS

    p = argparse.ArgumentParser(description="Time each stage of data.decode=device.")
    p.add_argument("--config", default="paper-inpainting", choices=sorted(CONFIGS))
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, default=10, help="timed batches per stage")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--threads", type=int, default=4, help="threads of `decode_threads`")
    p.add_argument("--workers", type=int, help="loader workers (default: the config's rule)")
    return p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Any, n_images: int, batches: int, device: torch.device) -> float:
    fn()  # untimed: first calls (nvJPEG handles, workers started)
    _sync(device)
    t = time.perf_counter()
    for _ in range(batches):
        fn()
    _sync(device)
    return round(n_images * batches / (time.perf_counter() - t), 1)


def main(args: argparse.Namespace) -> int:
    from torchvision.io import ImageReadMode, decode_jpeg

    from cebench.benchmarks.speed_steps import _config, write_images
    from cebench.core.device import pick_device
    from cebench.core.threads import default_workers
    from cebench.pretrain.device_data import (
        DeviceDecoder,
        RawImages,
        collate_raw,
        device_loader,
        jpeg_tensor,
    )
    from cebench.pretrain.train_data import TrainImages

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        probe = _config(args.config, work / "none", work / "run", args.batch_size, args.device)
        b, size = probe.train.batch_size, probe.model.input_size
        load = probe.data.load_size or size
        data = work / "images"
        write_images(data, max(2 * b, 16), round(load * 2), round(load * 1.5))
        device = pick_device(probe.train.device)
        paths = sorted(str(p) for p in data.glob("*.jpg"))
        ds = TrainImages(paths, size=size, load_size=load, crop="random", flip=True)
        workers = args.workers if args.workers is not None else default_workers(device.type)
        keys = [(i % len(paths), i) for i in range(b)]
        raw = RawImages(ds)
        items = [raw[k] for k in keys]
        blobs = [jpeg_tensor(it.data) for it in items]
        decoded = list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
        decoder = DeviceDecoder(ds, device)

        def batches(loader: Any) -> Any:
            while True:
                yield from loader

        kw: dict[str, Any] = {"batch_size": b, "num_workers": workers, "drop_last": True}
        if workers:
            kw["persistent_workers"] = True
        read_it = batches(
            torch.utils.data.DataLoader(
                RawImages(ds), collate_fn=collate_raw, sampler=_Keys(len(paths)), **kw
            )
        )
        full_it = batches(device_loader(ds, device, sampler=_Keys(len(paths)), **kw))
        pool = ThreadPoolExecutor(args.threads)
        parts = [blobs[i :: args.threads] for i in range(args.threads)]

        def threaded() -> None:
            list(pool.map(lambda p: decode_jpeg(p, mode=ImageReadMode.RGB, device=device), parts))

        from cebench.pretrain.device_data import resize_crop_flip

        stages = {
            "read": lambda: next(read_it),
            "decode": lambda: decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device),
            "decode_threads": threaded,
            "resize_crop_flip": lambda: resize_crop_flip(
                decoded, [k[1] for k in keys], size=size, load_size=load, crop="random", flip=True
            ),
            "decoder": lambda: decoder(list(items)),
            "loader": lambda: next(full_it),
        }
        out: dict[str, Any] = {
            "config": args.config,
            "device": str(device),
            "batch_size": b,
            "image_size": [round(load * 2), round(load * 1.5)],
            "mean_jpeg_kb": round(sum(len(x) for x in blobs) / len(blobs) / 1024, 1),
            "workers": workers,
            "threads": args.threads,
        }
        for name, fn in stages.items():
            out[f"{name}_img_per_s"] = _rate(fn, b, args.batches, device)
            print(f"{name:>17}: {out[f'{name}_img_per_s']:>9.1f} img/s", file=sys.stderr)
        pool.shutdown()
    print(json.dumps(out))
    return 0


class _Keys(torch.utils.data.Sampler):
    """(index, augmentation seed) keys without end, as the Trainer's sampler gives them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        i = 0
        while True:
            yield (i % self.n, i)
            i += 1

    def __len__(self) -> int:
        return 2**31


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
