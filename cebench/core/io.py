"""Atomic file writes and the encoder checkpoint format shared with the transfer harnesses.

An `encoder.pt` holds only tensors and plain data, so it loads with `torch.load(weights_only=True)`:

    {"format": "cebench-encoder/1", "name": <registry name>, "kwargs": {...build kwargs...},
     "state_dict": {...}, "meta": {"method": ..., "mask": ..., "run_dir": ..., ...}}

`load_encoder(path)` rebuilds the encoder through the registry and loads its weights.
"""

from __future__ import annotations

import errno
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.is_file()), None)
        raise NotADirectoryError(
            errno.ENOTDIR, f"a file is in the way ({blocker or path.parent})", str(path)
        ) from None
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
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
        raise CheckpointError(f"checkpoint {path} {_load_failure(e, path)}") from None


def _load_failure(e: Exception, path: Path | None = None) -> str:
    """Why torch.load refused a file, in our words (torch's own advice is to load it unsafely).

    Unsafe or corrupt is decided from the file itself (`unsafe_global`: the pickle imports a
    Python object weights-only loading does not allow), not from the wording of torch's message,
    which changes between versions."""
    text = str(e)
    unsafe = unsafe_global(path) if path is not None else None
    if unsafe is None:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        unsafe = found.group(1) if found else None
    if unsafe:
        return (
            f"is not a cebench checkpoint and is unsafe to load: it holds a Python object "
            f"({unsafe}) that could run code; cebench loads only tensors and plain data"
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


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING"}
_MAX_PICKLE_BYTES = 64 * 2**20  # the pickle of a checkpoint is small: its tensors are elsewhere


def _allowed_globals() -> set[str]:
    try:  # what torch.load(weights_only=True) itself allows
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:  # a torch without it: tensors and the containers they come in
        return {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"}


def unsafe_global(path: str | Path) -> str | None:
    """The first Python object (`module.name`) the pickle in `path` imports that weights-only
    loading does not allow, or None (no such import, or not a readable pickle). Reads the
    pickle's opcodes (`pickletools`); nothing in it is executed. A torch zip file's pickle is
    its `data.pkl`; any other file is read as one pickle."""
    import pickletools
    import zipfile

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not names or z.getinfo(names[0]).file_size > _MAX_PICKLE_BYTES:
                    return None
                data = z.read(names[0])
        else:
            with open(path, "rb") as f:
                data = f.read(_MAX_PICKLE_BYTES)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    allowed = _allowed_globals()
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in _STRING_OPS:
                strings.append(str(arg))
                continue
            if op.name == "GLOBAL":
                name = str(arg).replace(" ", ".", 1)
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                continue
            if name not in allowed:
                return name
    except Exception:  # a corrupt pickle past the point read: what was read holds no import
        return None
    return None


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
