"""Frozen per-layer features, pooled to a fixed size and cached on disk.

    feats = extract_features(encoder, view, layers, cache, key_parts, batch_size=64, device=dev)
    feats["conv3"]   # float32 [N, D]

Each stage's map [C, H, W] is average-pooled (adaptive) to a g x g grid with g the largest side
<= H such that C * g * g <= `dims` (default 9216, the ~9k-dimensional per-layer features of the
layer-wise linear-probe protocol of Zhang, Isola & Efros, "Split-Brain Autoencoders", CVPR 2017),
then flattened. Features depend only on (encoder weights hash, dataset fingerprint, split, layer,
input size, dims), which is the cache key: a second run with the same encoder and data loads
them instead of running the encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.errors import CheckpointError
from cebench.core.io import atomic_save, safe_load


def default_cache_dir(out_dir: str | Path | None) -> Path:
    """`<out>/../feature-cache` when an out dir is given, else ~/.cache/cebench/features."""
    if out_dir:
        return Path(out_dir).resolve().parent / "feature-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cebench" / "features"


def pool_grid(channels: int, height: int, dims: int) -> int:
    """Grid side g (1 <= g <= height) with channels * g^2 <= dims, as large as possible."""
    return max(1, min(height, math.isqrt(max(1, dims // channels))))


def pool_features(fmap: torch.Tensor, dims: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C * g * g] by adaptive average pooling (a [B, D] input passes through)."""
    if fmap.dim() == 2:
        return fmap
    g = pool_grid(fmap.shape[1], min(fmap.shape[-2:]), dims)
    return F.adaptive_avg_pool2d(fmap, g).flatten(1)


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def compute_features(
    encoder: nn.Module, loader, layers: list[str], dims: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One pass over `loader` ((images, targets) batches): pooled features of `layers` + targets."""
    encoder.eval().to(device)
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    targets: list[torch.Tensor] = []
    for images, target in loader:
        out = encoder.forward_features(images.to(device))
        for name in layers:
            feats[name].append(pool_features(out[name], dims).float().cpu())
        targets.append(target)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(targets)


def extract_features(
    encoder: nn.Module,
    loader,
    layers: list[str],
    key_parts: dict[str, Any],
    cache_dir: Path | None,
    dims: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, bool]]:
    """Features of `layers` (from the cache when every layer is there) -> (feats, targets, hits).

    `key_parts` identifies encoder weights, dataset, split and input size; the layer and `dims` are
    added per file. With `cache_dir=None` nothing is read or written.
    """
    paths = {name: None for name in layers}
    if cache_dir is not None:
        for name in layers:
            paths[name] = (
                Path(cache_dir) / f"{cache_key({**key_parts, 'layer': name, 'dims': dims})}.pt"
            )
    cached: dict[str, torch.Tensor] = {}
    targets = None
    for name, p in paths.items():
        if p is not None and p.is_file():
            try:
                blob = safe_load(p)
                cached[name], targets = blob["features"], blob["targets"]
            except (CheckpointError, KeyError):
                pass  # a torn or foreign file is recomputed and overwritten
    hits = {name: name in cached for name in layers}
    missing = [n for n in layers if n not in cached]
    if missing:
        fresh, targets = compute_features(encoder, loader, missing, dims, device)
        for name in missing:
            cached[name] = fresh[name]
            if paths[name] is not None:
                atomic_save(
                    {
                        "features": fresh[name],
                        "targets": targets,
                        "key": {**key_parts, "layer": name},
                    },
                    paths[name],
                )
    return {n: cached[n] for n in layers}, targets, hits
