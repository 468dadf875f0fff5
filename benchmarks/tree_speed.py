"""ImageNet-sized trees: the cost of listing them, of starting pretraining on them, and of
`cebench data check`, measured on a generated ImageFolder tree and extrapolated to 1.28M files.

    python -m cebench.benchmarks.tree_speed --files 100000 --root /tmp/tree   # about a minute here
    python -m cebench.benchmarks.tree_speed --files 2000 --check-files 500 --root /tmp/t  # seconds

The tree is ROOT/train/<class>/<n>.JPEG, `--classes` folders (ImageNet: 1,000 of ~1,280 files),
every file a hard link to one small real JPEG: as many directory entries and inodes to list as a
real tree, and decodable, at no disk cost. It measures:

- listing (`cebench.data.list_images`, a Path per file): with the cache off, then the first
  listing with the cache on (it writes the cache), then a cached one (stats the folders, reads
  the cache); and what pretraining calls (`cebench.data.layout.pretrain_images`: the layout,
  then path strings), without and with the cache;
- time to the first step: `cebench pretrain --steps 1` (small config, tiny network, no workers)
  on the tree, cache cold and warm, against the same command on a 500-file tree: the difference
  is what the tree's size costs before training starts;
- `cebench data check`'s work (`cebench.data.check.check`, every image decoded in full) on a
  separate tree of `--check-files` files, with one process and with the usable CPUs / concurrent
  jobs (`cebench.core.threads`; what `--workers 0` picks when no thread variable is set).

Each number is also scaled linearly to 1,281,167 files (ImageNet's train split); listing is
linear in the files and folders, the cached listing in the files (the cache's size) plus a stat
per folder. Printed as a table; `--json` adds one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGENET_FILES = 1_281_167


def make_tree(root: Path, files: int, classes: int) -> Path:
    """ROOT/train/cNNNN/NNNNNNN.JPEG hard links to a 72x64 JPEG (reused if complete)."""
    import numpy as np
    from PIL import Image

    from cebench.data import listing

    train = root / "train"
    stamp = root / f".made-{files}-{classes}"
    if stamp.is_file():
        return train
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (64, 72, 3), dtype=np.uint8))
    (root / "sources").mkdir()
    per = -(-files // classes)
    n = 0
    for c in range(classes):
        # one source file per folder: a file takes at most 65,000 links on ext4
        src = root / "sources" / f"c{c:04d}.jpg"
        pixels.save(src, quality=90)
        folder = train / f"c{c:04d}"
        folder.mkdir(parents=True)
        for _ in range(min(per, files - n)):
            os.link(src, folder / f"{n:07d}.JPEG")
            n += 1
    # the listing cache skips folders modified in the last SETTLE_S seconds (the same mtime tick)
    time.sleep(listing.SETTLE_S)
    stamp.write_text("")
    return train


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def listing_times(train: Path, cache: Path) -> dict[str, float]:
    from cebench.data.images import list_images

    os.environ["CEBENCH_LISTING_CACHE"] = "off"
    off = _timed(lambda: list_images(train))
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["CEBENCH_LISTING_CACHE"] = str(cache)
    first = _timed(lambda: list_images(train))
    cached = _timed(lambda: list_images(train))
    # what pretraining calls: the layout, then path strings (no Path object per file)
    from cebench.data.layout import pretrain_images

    os.environ["CEBENCH_LISTING_CACHE"] = "off"
    pre_off = _timed(lambda: pretrain_images(train))
    os.environ["CEBENCH_LISTING_CACHE"] = str(cache)
    pre_cached = _timed(lambda: pretrain_images(train))
    return {
        "uncached_s": off,
        "first_with_cache_s": first,
        "cached_s": cached,
        "pretrain_images_uncached_s": pre_off,
        "pretrain_images_cached_s": pre_cached,
    }


def pretrain_seconds(data: Path, out: Path, cache: str, repeats: int = 2) -> float:
    """Wall time of `cebench pretrain --steps 1` (process start to exit), the best of `repeats`."""
    return min(_pretrain_once(data, out, cache) for _ in range(repeats))


def _pretrain_once(data: Path, out: Path, cache: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CEBENCH_LISTING_CACHE": cache, "CEBENCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "cebench", "pretrain", "--data", str(data), "--config", "small"]
    cmd += ["--steps", "1", "--batch-size", "4", "--out", str(out)]
    cmd += ["data.workers=0", "data.fill=released", "model.encoder_kwargs={width: 8}"]
    cmd += ["model.decoder_widths=[16,16]", "model.disc_width=8", "train.sample_every=0"]
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pretrain failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def check_seconds(folder: Path, workers: int) -> float:
    """`cebench data check`'s work (`cebench.data.check.check`) in this process."""
    from cebench.data.check import check
    from cebench.data.images import clear_file_cache

    best = float("inf")
    for _ in range(2):  # the best of two: a shared machine's noise only ever adds time
        clear_file_cache()  # one process would otherwise find the last run's decoded images
        start = time.perf_counter()
        report = check(folder, workers=workers)
        best = min(best, time.perf_counter() - start)
        if report.problems:
            raise SystemExit(f"data check found problems: {report.problems[:3]}")
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cebench.benchmarks.tree_speed", description=__doc__)
    p.add_argument("--files", type=int, default=100_000, help="files in the tree (default 100000)")
    p.add_argument("--classes", type=int, default=100, help="class folders (default 100)")
    p.add_argument("--check-files", type=int, default=10_000, help="files data check reads")
    p.add_argument("--root", default=None, help="where to build the trees (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from cebench.core.threads import available_cpus, choose_threads, jobs_from_env

    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="tree-speed-"))
    start = time.perf_counter()
    train = make_tree(base / "big", args.files, args.classes)
    made = time.perf_counter() - start
    small = make_tree(base / "small", 500, 5)
    check_dir = make_tree(base / "check", args.check_files, max(1, args.check_files // 1000))
    cache = base / "listing-cache"
    lst = listing_times(train, cache)
    pre = {
        "small_tree_s": pretrain_seconds(small, base / "run", "off"),
        "cold_s": pretrain_seconds(train, base / "run", "off"),
    }
    pre["warm_s"] = pretrain_seconds(train, base / "run", str(cache))
    cpus = choose_threads(available_cpus(), jobs_from_env(os.environ))  # data check's default
    chk = {
        "one_process_s": check_seconds(check_dir, 1),
        f"{cpus}_processes_s": check_seconds(check_dir, cpus),
    }
    scale = IMAGENET_FILES / args.files
    cscale = IMAGENET_FILES / args.check_files
    rows = [
        ("tree made (hard links)", made, None),
        ("list_images, no cache", lst["uncached_s"], lst["uncached_s"] * scale),
        ("list_images, writing the cache", lst["first_with_cache_s"], lst["first_with_cache_s"] * scale),
        ("list_images, cached", lst["cached_s"], lst["cached_s"] * scale),
        ("pretrain_images (strings), no cache", lst["pretrain_images_uncached_s"], lst["pretrain_images_uncached_s"] * scale),
        ("pretrain_images (strings), cached", lst["pretrain_images_cached_s"], lst["pretrain_images_cached_s"] * scale),
        ("pretrain 1 step, 500 files", pre["small_tree_s"], None),
        ("pretrain 1 step, no cache", pre["cold_s"], pre["small_tree_s"] + max(0.0, pre["cold_s"] - pre["small_tree_s"]) * scale),
        ("pretrain 1 step, cached", pre["warm_s"], pre["small_tree_s"] + max(0.0, pre["warm_s"] - pre["small_tree_s"]) * scale),
        (f"data check {args.check_files} files, 1 process", chk["one_process_s"], chk["one_process_s"] * cscale),
        (f"data check {args.check_files} files, {cpus} processes", chk[f"{cpus}_processes_s"], chk[f"{cpus}_processes_s"] * cscale),
    ]  # fmt: skip
    print(f"{args.files:,} files in {args.classes} folders; extrapolated to {IMAGENET_FILES:,}")
    print(f"{'':44} {'measured':>10} {'at 1.28M':>10}")
    for name, measured, at in rows:
        print(f"{name:44} {measured:9.2f}s {'' if at is None else f'{at:9.1f}s':>10}")
    if args.json:
        print(json.dumps({"files": args.files, "classes": args.classes, "listing": lst,
                          "pretrain": pre, "check": chk, "check_files": args.check_files,
                          "cpus": cpus}))  # fmt: skip
    if not args.root:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
