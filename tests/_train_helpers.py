"""Shared helpers for the training tests: tiny configs (32 px, width-4 nets) and generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cebench.core.config import _deep_merge, apply_overrides
from cebench.pretrain.config import PretrainConfig, config_from_dict

TINY_MODEL = {
    "input_size": 32,
    "output_size": 32,
    "encoder_kwargs": {"width": 4},
    "decoder_widths": [8, 8],
    "disc_width": 4,
}


def write_images(root: Path, n: int = 16, size: int = 36, seed: int = 0, classes: int = 0) -> Path:
    """Smooth random colour images (gradients + a rectangle), learnable at 32 px.

    With classes > 0, an ImageFolder tree whose class decides the rectangle's colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(0, 1, 3)
        slope = rng.uniform(-0.5, 0.5, (2, 3))
        img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        x0, y0 = rng.integers(0, size // 2, 2)
        cls = i % classes if classes else 0
        colour = np.eye(3)[cls % 3] if classes else rng.uniform(0, 1, 3)
        img[y0 : y0 + size // 3, x0 : x0 + size // 3] = colour
        arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        folder = root / f"c{cls}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return root


def tiny_config(
    data: Path, out: Path, overrides: list[str] | None = None, **sections
) -> PretrainConfig:
    """A config for a few-second run: 32 px, batch 4, no workers, log every step."""
    base = {
        "model_preset": "small-tiny",
        "model": dict(TINY_MODEL),
        "data": {"path": str(data), "workers": 0, "fill_samples": 8, "load_size": 36},
        "mask": {"kind": "random-block", "overlap": 1},
        "train": {
            "out": str(out),
            "steps": 6,
            "batch_size": 4,
            "log_every": 1,
            "save_every": 3,
            "sample_every": 3,
            "seed": 1,
        },
    }
    cfg = config_from_dict(_deep_merge(base, sections))
    return apply_overrides(cfg, overrides or [])
