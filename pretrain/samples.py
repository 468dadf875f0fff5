"""Inpainting results as images: compositing a prediction into its context, and PNG grids.

    full = composite(images, hole, pred)      # context pixels kept, hole pixels predicted
    save_grid(run_dir / "samples/step_000500.png", [masked, full, images])

Images are [B,3,H,W] in [-1, 1]. A prediction is either the whole image or the centre region of
side `pred.shape[-1]` (the released inpainting network predicts the 64 px centre of 128 px).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from pretrain.checkpoint import _atomic_write_bytes


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


def save_grid(path: str | Path, rows: list[torch.Tensor], max_images: int = 8) -> None:
    """One PNG, one row per tensor in `rows` (e.g. masked input / composite / ground truth)."""
    n = min(max_images, rows[0].shape[0])
    tiles = torch.cat([r[:n].detach().float().cpu() for r in rows])
    grid = make_grid(tiles.add(1).div(2).clamp(0, 1), nrow=n, padding=2, pad_value=1.0)
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    _atomic_write_bytes(path, buf.getvalue())
