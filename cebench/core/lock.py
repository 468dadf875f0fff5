"""One writer per output folder: an exclusive lock held while a command writes there.

    with folder_lock("runs/ce", "cebench pretrain"):   # creates runs/ce, refuses a second writer
        ...

The lock is `fcntl.flock` on FOLDER/.cebench.lock, kept open for as long as the command writes.
The operating system releases it when the process ends, however it ends (SIGKILL, out of memory,
a power cut on a network file system aside), so a dead writer never leaves a stale lock. The file
holds the holder's pid, which a refused second writer names. The file itself is never deleted:
deleting it would let two processes lock two different files of the same name.

`prepare_out_dir` is the check every `--out` gets first: it must be a folder (or creatable as one)
that this process can write into, and it may not overlap the command's inputs (`refuse_overlap`:
it may not be, contain or lie inside the data, images, run folder or checkpoint it reads);
otherwise a one-line ConfigError names it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cebench.core.errors import ConfigError

LOCK_NAME = ".cebench.lock"
Inputs = Mapping[str, "str | Path | None"]


def refuse_overlap(out: str | Path, inputs: Inputs | None, flag: str = "--out") -> None:
    """ConfigError when the output `out` is, contains or lies inside one of `inputs` (what it is
    called on the command line -> its path; empty ones are skipped). Every command that writes
    calls this (through `prepare_out_dir` / `FolderLock`) before it writes anything, so that
    `--out` can never overwrite, delete or add to what the command reads. Paths are compared
    resolved (symlinks followed), so a link to an input is the input."""
    target = Path(out).expanduser().resolve()
    for name, given in (inputs or {}).items():
        if given is None or str(given) == "":
            continue
        source = Path(given).expanduser().resolve()
        if target == source:
            how = "is"
        elif source.is_relative_to(target):
            how = "contains"
        elif target.is_relative_to(source):
            how = "lies inside"
        else:
            continue
        raise ConfigError(
            f"{flag} {out} {how} the input {name} {given}: a command never writes into what it "
            f"reads; choose another {flag}"
        )


def prepare_out_dir(folder: str | Path, flag: str = "--out", inputs: Inputs | None = None) -> Path:
    """Create `folder` (and its parents) or raise ConfigError naming it: an existing file, a
    read-only or missing parent, no permission, an overlap with `inputs` (`refuse_overlap`)."""
    refuse_overlap(folder, inputs, flag)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {folder}: is a file, not a folder") from None
    except NotADirectoryError:  # a file where one of its parent folders should be
        blocker = next((p for p in folder.parents if p.is_file()), folder.parent)
        raise ConfigError(
            f"{flag} {folder}: cannot create the folder: a file is in the way ({blocker})"
        ) from None
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(folder) else ""
        raise ConfigError(
            f"{flag} {folder}: cannot create the folder: {e.strerror or e}{where}"
        ) from None
    return folder


def _holder(fd: int) -> str:
    """The pid written by the holder (it may still be writing it: retry briefly)."""
    for _ in range(20):
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text:
            pid, _, what = text.partition(" ")
            return f"pid {pid}: {what}" if what else f"pid {pid}"
        time.sleep(0.05)
    return "pid unknown"


class FolderLock:
    """An exclusive lock on a folder; see the module docstring. `acquire` raises ConfigError."""

    def __init__(
        self,
        folder: str | Path,
        what: str = "cebench",
        flag: str = "--out",
        inputs: Inputs | None = None,
        lock_name: str = LOCK_NAME,
        shown: str | Path | None = None,
    ) -> None:
        """`inputs`: what the command reads (see `refuse_overlap`); `lock_name`: the lock file's
        name in `folder`; `shown`: the folder the errors name (`data prepare` locks its --out
        by a file beside it, `.NAME.cebench.lock` in the parent, since it renames --out)."""
        self.folder, self.what, self.flag = Path(folder), what, flag
        self.inputs, self.lock_name = inputs, lock_name
        self.shown = Path(shown) if shown is not None else self.folder
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        prepare_out_dir(self.folder, self.flag, self.inputs)
        path = self.folder / self.lock_name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(
                f"{self.flag} {self.folder}: cannot write into the folder: {e.strerror or e}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else ""
            os.close(fd)
            if not holder:
                raise ConfigError(
                    f"{self.flag} {self.folder}: cannot lock {path}: {e.strerror or e}"
                ) from None
            raise ConfigError(
                f"{self.flag} {self.shown} is in use by another cebench process ({holder}); "
                f"wait for it to finish or choose another {self.flag}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def folder_lock(
    folder: str | Path, what: str = "cebench", flag: str = "--out", inputs: Inputs | None = None
) -> Iterator[Path]:
    """`with folder_lock(out, "cebench bench"):` - the folder, created, locked for the block."""
    with FolderLock(folder, what, flag, inputs) as lock:
        yield lock.folder
