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
    name, kwargs, state = _parts(path, ckpt)
    try:
        encoder = build_encoder(name, **kwargs)
    except Exception as e:  # the file's kwargs (a negative width, ...): any failure is the file's
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: malformed encoder checkpoint: cannot build encoder '{name}' with {kwargs} ({why})"
        ) from None
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        why = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"{path}: weights do not fit encoder '{name}' with {kwargs}: {why}"
        ) from None
    meta = ckpt.get("meta", {})
    return encoder, {"name": name, "kwargs": kwargs, "meta": meta if isinstance(meta, dict) else {}}


def _parts(path: str | Path, ckpt: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """name, kwargs and state_dict of a loaded encoder.pt, checked (CheckpointError naming the
    field): a weights-only file can still hold anything."""
    name, kwargs, state = ckpt.get("name"), ckpt.get("kwargs", {}), ckpt.get("state_dict")
    bad = (
        "'name' is missing or not a string"
        if not isinstance(name, str) or not name
        else "'kwargs' is not a mapping of names"
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)
        else "'state_dict' is not a mapping of names to tensors"
        if not isinstance(state, dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        else ""
    )
    if bad:
        raise CheckpointError(f"{path}: malformed encoder checkpoint: {bad}")
    return name, kwargs, state
