"""Pick the training device and the precision that pays on it."""

from __future__ import annotations

import torch

from cebench.core.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if present, else CPU; otherwise the named device ('cpu', 'cuda', 'cuda:1').

    Raises ConfigError for an unknown device or one this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device '{name}' is not known; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device '{name}': no CUDA GPU is available here; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device '{name}': this machine has {count} CUDA GPU(s)")
    elif device.type not in ("cpu", "mps", "meta"):
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}': MPS is not available here; use cpu or auto")
    return device


def describe(device: torch.device) -> str:
    """A short human-readable device description for metrics and provenance."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"
