"""Pick the training device and the precision that pays on it."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if present, else CPU; otherwise the named device ('cpu', 'cuda', 'cuda:1')."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """A short human-readable device description for metrics and provenance."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"
