"""The encoder checkpoint format shared with the transfer harnesses (`encoder.pt`).

An `encoder.pt` holds only tensors and plain data, so it loads with `torch.load(weights_only=True)`:

    {"format": "cebench-encoder/1", "name": <registry name>, "kwargs": {...build kwargs...},
     "state_dict": {...}, "meta": {"method": ..., "mask": ..., "run_dir": ..., ...}}

`load_encoder(path)` rebuilds the encoder through the registry and loads its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cebench.core.errors import CheckpointError
from cebench.core.io import atomic_save, safe_load
from cebench.pretrain.models import build_encoder

ENCODER_FORMAT = "cebench-encoder/1"


def save_encoder(
    path: str | Path,
    encoder: torch.nn.Module,
    name: str,
    kwargs: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Write `encoder.pt`: the registry name and kwargs rebuild the module, then its weights load."""
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    atomic_save(
        {
            "format": ENCODER_FORMAT,
            "name": name,
            "kwargs": dict(kwargs),
            "state_dict": state,
            "meta": dict(meta),
        },
        path,
    )


def load_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild an encoder from `encoder.pt`; returns (encoder, info) with info = name, kwargs, meta."""
    ckpt = safe_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != ENCODER_FORMAT:
        raise CheckpointError(
            f"{path} is not a cebench encoder checkpoint (expected format {ENCODER_FORMAT})"
        )
    encoder = build_encoder(ckpt["name"], **ckpt["kwargs"])
    try:
        encoder.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit encoder '{ckpt['name']}' with {ckpt['kwargs']}: {e}"
        ) from None
    return encoder, {"name": ckpt["name"], "kwargs": ckpt["kwargs"], "meta": ckpt.get("meta", {})}
