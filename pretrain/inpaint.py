"""`cebench inpaint`: fill image holes with a trained context encoder or a baseline; L1 / L2 / PSNR.

    cebench inpaint --checkpoint runs/paris --images data/paris/test --out results/inpaint
    cebench inpaint --checkpoint runs/paris --images data/paris/test --out results/telea --method telea
    cebench inpaint --images DIR --out results/mean --method mean-fill --size 128 --mask center

Every image is resized (shorter side) and centre-cropped to the model's input size, as the paper
evaluates at the network's resolution. The masks are seeded per image from (--seed, image index),
so every method sees exactly the same holes. Methods:
  model      the context encoder in RUN_DIR/checkpoint.pt (the full generator, not encoder.pt)
  mean-fill  the hole set to the fill value (the run's dataset mean; without a checkpoint the mean
             colour of the evaluated images)
  telea, ns  OpenCV's cv2.inpaint, Telea (2004) fast marching / Navier-Stokes, radius 3 px

Outputs: OUT/<path below --images, "/" as "__">.png (the composited result: context kept, hole
filled) and
OUT/metrics.json. Metrics are computed from the written 8-bit results with pixel values in [0, 1],
over the dropped pixels (the hole, all 3 channels) only:
  l1 = mean |x - y|, l2 = mean (x - y)^2  (per image, then averaged over images; *_percent = x100,
       as the paper's Table 1);
  psnr_db = 10 log10(1 / l2) with l2 the mean over images (peak 1.0);
  psnr_mean_per_image_db = the mean over images of 10 log10(1 / l2_image).
The paper does not define its PSNR; its Table 1 (L2 1.96%, 18.58 dB) is not 10 log10(1/0.0196) =
17.1 dB, so it is most likely a mean of per-image values - both are reported.

Second reading (--method model, centre mask): the PyTorch port's test.py (and the Lua test.lua)
score the WHOLE predicted centre region (`region` px square, the overlap band included) of the RAW
network output, before compositing and without 8-bit rounding. Those are reported beside the hole
metrics under `region_raw_*`: region_raw_l1, region_raw_l2 (pixels in [0, 1]), *_percent,
region_raw_psnr_db, region_raw_psnr_mean_per_image_db (test.py's PSNR: per image, on
(x+1)*127.5 with peak 255, then averaged), and region_raw_l1_pm1 / region_raw_l2_pm1, the same
L1 / L2 on the network's [-1, 1] scale as test.py prints them (2x and 4x the [0, 1] values).
Which reading the paper's Table 1 uses is not stated; compare both.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.core.errors import CheckpointError, ConfigError

METHODS = ("model", "mean-fill", "telea", "ns")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Inpaint images with a context encoder or a baseline and measure L1/L2/PSNR in the hole.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "--checkpoint", help="run directory or its checkpoint.pt (needed for --method model)"
    )
    p.add_argument("--images", required=True, help="an image or a folder of images (any size)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--mask",
        choices=["center", "random-block", "random-region"],
        help="default: the run's mask",
    )
    p.add_argument("--method", choices=METHODS, default="model")
    p.add_argument("--seed", type=int, default=0, help="mask seed (same masks for every method)")
    p.add_argument(
        "--size", type=int, default=128, help="image size without a checkpoint (default 128)"
    )
    p.add_argument(
        "--region",
        type=int,
        help="centre mask: predicted region side (default: run's, else size/2)",
    )
    p.add_argument("--overlap", type=int, help="centre mask: overlap (default: run's, else 4)")
    p.add_argument(
        "--coverage", type=float, help="random masks: fraction dropped (default: run's, else 0.25)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    return p


def inpaint_metrics(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> dict[str, float]:
    """L1 and L2 over the hole of one image; arrays uint8 [H,W,3] (or floats in [0,1]), hole bool [H,W]."""
    if not hole.any():
        raise ValueError("the mask drops no pixel")
    scale = 255.0 if result.dtype == np.uint8 else 1.0
    diff = result.astype(np.float64) / scale - truth.astype(np.float64) / scale
    d = diff[hole]  # [n, 3]
    return {"l1": float(np.abs(d).mean()), "l2": float((d * d).mean())}


def psnr(l2: float) -> float:
    return float("inf") if l2 == 0 else 10.0 * math.log10(1.0 / l2)


def summarise(per_image: list[dict[str, float]]) -> dict[str, float]:
    l1 = float(np.mean([m["l1"] for m in per_image]))
    l2 = float(np.mean([m["l2"] for m in per_image]))
    return {
        "l1": l1,
        "l2": l2,
        "l1_percent": 100 * l1,
        "l2_percent": 100 * l2,
        "psnr_db": psnr(l2),
        "psnr_mean_per_image_db": float(np.mean([psnr(m["l2"]) for m in per_image])),
        "images": len(per_image),
    }


def region_raw_metrics(
    pred: np.ndarray, images: np.ndarray, region: int
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The PyTorch port's test.py reading: the whole centred `region` square of the raw prediction.

    `pred` float [N,region,region,3] in [0, 1] (not rounded); `images` uint8 [N,S,S,3]. Returns the
    summary (region_raw_* keys, see the module docstring) and the per-image l1 / l2."""
    size = images.shape[1]
    lo = (size - region) // 2
    truth = images[:, lo : lo + region, lo : lo + region].astype(np.float64) / 255.0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} does not match the centre region {truth.shape}")
    d = pred.astype(np.float64) - truth
    per_image = [
        {"l1": float(np.abs(x).mean()), "l2": float((x * x).mean())} for x in d
    ]  # mean over the region's pixels and channels
    s = summarise(per_image)
    out = {f"region_raw_{k}": v for k, v in s.items() if k != "images"}
    out["region_raw_l1_pm1"] = 2 * s["l1"]  # test.py's scale: images in [-1, 1]
    out["region_raw_l2_pm1"] = 4 * s["l2"]
    return out, per_image


def load_generator(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The context encoder and config of a run (RUN_DIR or RUN_DIR/checkpoint.pt)."""
    from cebench.core.checkpoints import load_training_checkpoint
    from cebench.pretrain.config import saved_config
    p = Path(path)
    if p.is_dir():
        state, _ = load_training_checkpoint(p)
    else:
        from cebench.core.io import safe_load

        state = safe_load(p)
        if not isinstance(state, dict) or "models" not in state or "config" not in state:
            raise CheckpointError(
                f"{p} is not a training checkpoint (pass the run directory or its checkpoint.pt; "
                "encoder.pt holds only the encoder and cannot inpaint)"
            )
    cfg = saved_config(state["config"], str(p))
    from cebench.pretrain.methods import get_method

    method = get_method(cfg.method)
    refusal = method.inpaint_refusal(cfg)
    if refusal is not None:
        raise CheckpointError(f"{p} is a {refusal}")
    net = method.inpainting_network(cfg)
    net.load_state_dict(state["models"]["net"])
    return net.to(device).eval(), cfg


def load_images(root: str | Path, size: int) -> tuple[list[Path], np.ndarray]:
    """Images resized (shorter side) and centre-cropped to `size`: uint8 [N,size,size,3]."""
    from cebench.data import list_images, load_rgb
    from cebench.pretrain.train_data import resize_shorter

    paths = list_images(root)
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        img = resize_shorter(load_rgb(p), size)
        w, h = img.size
        x0, y0 = (w - size) // 2, (h - size) // 2
        out[i] = np.asarray(img.crop((x0, y0, x0 + size, y0 + size)))
    return paths, out


def image_masks(
    kind: str, n: int, size: int, *, region: int, overlap: int, coverage: float, seed: int
) -> np.ndarray:
    """bool [N,size,size]; image i's mask depends only on (seed, i, kind, size, ...)."""
    from cebench.pretrain.masks import make_masks
    from cebench.pretrain.train_data import _seed

    masks = [
        make_masks(
            kind,
            1,
            size,
            region=region,
            overlap=overlap,
            coverage=coverage,
            generator=torch.Generator().manual_seed(_seed(seed, i, 13)),
        )[0, 0]
        for i in range(n)
    ]
    return torch.stack(masks).numpy()


def inpaint_cv2(images: np.ndarray, holes: np.ndarray, method: str, radius: int = 3) -> np.ndarray:
    import cv2

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    out = np.empty_like(images)
    for i, (img, hole) in enumerate(zip(images, holes, strict=True)):
        bgr = np.ascontiguousarray(img[..., ::-1])
        res = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, radius, flag)
        out[i] = res[..., ::-1]
    return out


@torch.no_grad()
def inpaint_model(
    net: torch.nn.Module,
    images: np.ndarray,
    holes: np.ndarray,
    fill: list[float],
    device: torch.device,
    batch_size: int = 16,
    region: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Composited results, uint8 [N,S,S,3]; with `region`, also the raw prediction's centred
    `region` square, float32 [N,region,region,3] in [0, 1] (for `region_raw_metrics`)."""
    from cebench.pretrain.masks import fill_holes
    from cebench.pretrain.samples import composite, to_uint8

    out = np.empty_like(images)
    raw = None if region is None else np.empty((len(images), region, region, 3), np.float32)
    fill_t = torch.tensor(fill, device=device) * 2 - 1
    for lo in range(0, len(images), batch_size):
        x = (
            torch.from_numpy(images[lo : lo + batch_size]).to(device).permute(0, 3, 1, 2).float()
            / 127.5
            - 1
        )
        hole = torch.from_numpy(holes[lo : lo + batch_size]).to(device)[:, None]
        pred = net(fill_holes(x, hole, fill_t)).float()
        out[lo : lo + batch_size] = to_uint8(composite(x, hole, pred))
        if raw is not None:
            off = (pred.shape[-1] - region) // 2  # whole-image predictions: crop the centre
            crop = pred[..., off : off + region, off : off + region]
            raw[lo : lo + batch_size] = ((crop + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return out if raw is None else (out, raw)


def output_names(paths: list[Path], root: Path) -> list[str]:
    """One PNG name per input, unique even when subfolders repeat a file name: the path below
    `root` with '/' written as '__' (never a path that could leave the output folder)."""
    base = root if root.is_dir() else root.parent
    names = []
    for p in paths:
        rel = Path(p).relative_to(base) if Path(p).is_relative_to(base) else Path(Path(p).name)
        names.append("__".join(rel.with_suffix("").parts) + ".png")
    return names


def check_geometry(
    size: int, kind: str, region: int, overlap: int, coverage: float, batch_size: int
) -> None:
    """ConfigError naming the option whose value cannot make a mask (or a batch)."""
    if size < 8:
        raise ConfigError(f"--size must be >= 8 (the image side in pixels), got {size}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if overlap < 0:
        raise ConfigError(f"--overlap must be >= 0, got {overlap}")
    if kind == "center" and not 2 * overlap < region <= size:
        raise ConfigError(
            f"--region {region} with --overlap {overlap} does not fit a {size} px image "
            "(need 2 * overlap < region <= size)"
        )
    if kind != "center" and not 0.0 < coverage <= 1.0:
        raise ConfigError(f"--coverage must be in (0, 1], got {coverage}")


def main(args: argparse.Namespace) -> int:
    """`cebench inpaint`: one writer per --out (`cebench.core.lock`)."""
    from cebench.core.lock import FolderLock

    if args.region is not None and args.region < 1:
        raise ConfigError(f"--region must be >= 1, got {args.region}")
    if args.coverage is not None and not 0.0 < args.coverage <= 1.0:
        raise ConfigError(f"--coverage must be in (0, 1], got {args.coverage}")
    inputs = {"--images": args.images, "--checkpoint": args.checkpoint}
    with FolderLock(args.out, "cebench inpaint", inputs=inputs):
        return _inpaint(args)


def _inpaint(args: argparse.Namespace) -> int:
    from cebench.core.device import pick_device
    from cebench.core.io import inside
    from cebench.pretrain.samples import save_png

    device = pick_device(args.device)
    net, cfg = None, None
    if args.checkpoint:
        net, cfg = load_generator(args.checkpoint, device)
    elif args.method == "model":
        raise ConfigError(
            "--method model needs --checkpoint (a run directory or its checkpoint.pt)"
        )
    size = cfg.model.input_size if cfg else args.size
    kind = args.mask or (cfg.mask.kind if cfg and cfg.mask.kind != "none" else "center")
    region = args.region or (cfg.mask.region if cfg and cfg.mask.region else size // 2)
    overlap = args.overlap if args.overlap is not None else (cfg.mask.overlap if cfg else 4)
    coverage = args.coverage or (cfg.mask.coverage if cfg else 0.25)
    if (
        cfg is not None
        and cfg.model.predict == "region"
        and (kind != "center" or region != cfg.model.output_size)
    ):
        raise ConfigError(
            f"this model predicts the {cfg.model.output_size} px centre region only; "
            f"use --mask center (region {cfg.model.output_size})"
        )
    check_geometry(size, kind, region, overlap, coverage, args.batch_size)

    paths, images = load_images(args.images, size)
    from cebench.core.threads import set_threads, threads_note

    set_threads()  # CPUs this process may use / concurrent jobs (cebench.core.threads)
    if note := threads_note():
        print(note, file=sys.stderr)
    holes = image_masks(
        kind, len(images), size, region=region, overlap=overlap, coverage=coverage, seed=args.seed
    )
    if cfg is not None and cfg.data.fill_value is not None:
        fill = list(cfg.data.fill_value)
    else:
        fill = [float(v) for v in images.reshape(-1, 3).mean(0) / 255.0]
    region_raw: dict[str, float] = {}
    raw_per_image: list[dict[str, float]] = []
    if args.method == "model" and kind == "center":
        results, raw = inpaint_model(net, images, holes, fill, device, args.batch_size, region)
        region_raw, raw_per_image = region_raw_metrics(raw, images, region)
    elif args.method == "model":
        results = inpaint_model(net, images, holes, fill, device, args.batch_size)
    elif args.method == "mean-fill":
        fill_u8 = np.round(np.asarray(fill) * 255).astype(np.uint8)
        results = np.where(holes[..., None], fill_u8, images)
    else:
        results = inpaint_cv2(images, holes, args.method)

    out = Path(args.out)
    per_image = []
    for p, name, res, img, hole in zip(
        paths, output_names(paths, Path(args.images)), results, images, holes, strict=True
    ):
        save_png(inside(out, name), res)  # a name from a file name never leaves --out
        per_image.append({"image": str(p), **inpaint_metrics(res, img, hole)})
    for m, r in zip(per_image, raw_per_image, strict=False):
        m.update({"region_raw_l1": r["l1"], "region_raw_l2": r["l2"]})
    report = {
        "method": args.method,
        "mask": kind,
        "seed": args.seed,
        "size": size,
        "region": region if kind == "center" else None,
        "overlap": overlap if kind == "center" else None,
        "coverage": coverage if kind != "center" else None,
        "fill": fill,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "definition": "pixels in [0,1], over the hole (dropped pixels, 3 channels); l1/l2 averaged over images; "
        "psnr_db = 10 log10(1 / mean l2); psnr_mean_per_image_db = mean of per-image PSNR"
        + (
            "; region_raw_*: the same over the whole predicted centre region of the raw "
            "prediction (PyTorch port test.py), *_pm1 on the [-1, 1] scale"
            if region_raw
            else ""
        ),
        **summarise(per_image),
        **region_raw,
        "per_image": per_image,
    }
    from cebench.core.io import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    print(
        f"{args.method}: L1 {report['l1_percent']:.2f}%  L2 {report['l2_percent']:.2f}%  "
        f"PSNR {report['psnr_db']:.2f} dB ({len(per_image)} images) -> {out}",
        file=sys.stderr,
    )
    if region_raw:
        print(
            f"{args.method}, whole centre region, raw prediction: "
            f"L1 {region_raw['region_raw_l1_percent']:.2f}%  "
            f"L2 {region_raw['region_raw_l2_percent']:.2f}%  "
            f"PSNR {region_raw['region_raw_psnr_mean_per_image_db']:.2f} dB (mean per image)",
            file=sys.stderr,
        )
    return 0
