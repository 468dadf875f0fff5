"""Atomic file writes and the encoder checkpoint format shared with the transfer harnesses.

An `encoder.pt` holds only tensors and plain data, so it loads with `torch.load(weights_only=True)`:

    {"format": "cebench-encoder/1", "name": <registry name>, "kwargs": {...build kwargs...},
     "state_dict": {...}, "meta": {"method": ..., "mask": ..., "run_dir": ..., ...}}

`load_encoder(path)` rebuilds the encoder through the registry and loads its weights.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cebench.core.errors import CheckpointError

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
    """`torch.load(weights_only=True)` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a forbidden type, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a weights-only file: {e}"
        ) from None
