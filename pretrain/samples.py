"""Inpainting results as images: compositing a prediction into its context, and PNG grids.

    full = composite(images, hole, pred)      # context pixels kept, hole pixels predicted
    save_grid(run_dir / "samples/step_000500.png", [masked, full, images])

Images are [B,3,H,W] in [-1, 1]. A prediction is either the whole image or the centre region of
side `pred.shape[-1]` (the released inpainting network predicts the 64 px centre of 128 px).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cebench.core.io import atomic_write_bytes


def paste_prediction(images: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """`pred` placed at the centre of a copy of `images` (or `pred` itself if it is full size)."""
    size, out = images.shape[-1], pred.shape[-1]
    if out == size:
        return pred
    off = (size - out) // 2
    full = images.clone()
    full[..., off : off + out, off : off + out] = pred.to(images.dtype)
    return full


def composite(images: torch.Tensor, hole: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """The inpainted image: known pixels from `images`, dropped pixels (hole) from `pred`."""
    return torch.where(hole, paste_prediction(images, pred).to(images.dtype), images)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] in [-1, 1] -> uint8 [B,H,W,3] (rounded as torchvision's save_image)."""
    x = images.detach().float().cpu().add(1).mul(127.5).add(0.5).clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_png(path: str | Path, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def save_grid(
    path: str | Path, rows: list[torch.Tensor], max_images: int = 8, pad: int = 2
) -> np.ndarray:
    """One PNG, one row per tensor in `rows` (e.g. masked input / composite / ground truth);
    returns the grid (`grid_image`)."""
    grid = grid_image(rows, max_images, pad)
    save_png(path, grid)
    return grid


def grid_image(rows: list[torch.Tensor], max_images: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 [H, W, 3]: one row per tensor in `rows`, white 2 px padding (the layout of
    torchvision's make_grid, without importing torchvision)."""
    n = min(max_images, rows[0].shape[0])
    h, w = rows[0].shape[-2:]
    grid = np.full((pad + len(rows) * (h + pad), pad + n * (w + pad), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(to_uint8(row[:n])):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = tile
    return grid
