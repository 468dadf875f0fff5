"""Atomic file writes and the encoder checkpoint format shared with the transfer harnesses.

An `encoder.pt` holds only tensors and plain data, so it loads with `torch.load(weights_only=True)`:

    {"format": "cebench-encoder/1", "name": <registry name>, "kwargs": {...build kwargs...},
     "state_dict": {...}, "meta": {"method": ..., "mask": ..., "run_dir": ..., ...}}

`load_encoder(path)` rebuilds the encoder through the registry and loads its weights.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from cebench.core.errors import CheckpointError, ConfigError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file open()'s usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see either the old file or the whole new one."""
    atomic_write_bytes(path, text.encode())


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` through a temporary file and `os.replace`: a crash never leaves half a file.

    Raises CheckpointError (naming the path) when the write fails, for example a full disk or a
    read-only directory; the previous file at `path` is then left as it was.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from e


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` with one-line errors that name the file.

    A file holding Python objects other than tensors and plain data is refused as unsafe (loading
    it could run code); the message never suggests `weights_only=False`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): not a cebench checkpoint (an interrupted copy?)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a forbidden type, ...
        raise CheckpointError(f"checkpoint {path} {_load_failure(e)}") from None


def _load_failure(e: Exception) -> str:
    """Why torch.load refused a file, in our words (torch's own advice is to load it unsafely)."""
    text = str(e)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return (
            f"is not a cebench checkpoint and is unsafe to load: it holds a Python object "
            f"({unsafe.group(1)}) that could run code; cebench loads only tensors and plain data"
        )
    if "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        why = detail.group(1).strip() if detail else "not a weights-only file"
        return f"is corrupt or not a cebench checkpoint (unreadable pickle: {why})"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.split(". This is an internal")[0]  # miniz's advice adds nothing
    if "weights_only" in first or not first:
        first = type(e).__name__
    return f"is corrupt or not a cebench checkpoint ({first})"


def inside(base: str | Path, *parts: str | Path) -> Path:
    """`base/parts...` resolved, refused (ConfigError) unless it lies strictly inside `base`.

    Every path built from a config value or a file name goes through here, so that `..`, an
    absolute part or a symlink pointing out cannot make cebench write outside its folder."""
    root = Path(base).resolve()
    target = root.joinpath(*(str(p) for p in parts)).resolve()
    if target == root or not target.is_relative_to(root):
        shown = "/".join(str(p) for p in parts)
        raise ConfigError(
            f"'{shown}' would be outside {base} (resolves to {target}); names may not hold "
            "'..', an absolute path or a symlink pointing out"
        )
    return target
