"""A resized copy of an image folder, made once, so training does not decode full-size photos.

    cebench data prepare ~/photos --size 160 --out data/photos-160
    cebench pretrain --config small-dcgan --data data/photos-160 --out runs/photos

    from cebench.data.prepare import prepare
    info = prepare("~/photos", "data/photos-160", size=160)

Every image under SRC (`list_images`: recursive, hidden files skipped) is written to the same
relative path and name under DST, its shorter side resized to `size` (aspect kept, bicubic, the
same rounding as pretraining's resize) after `load_rgb` (EXIF orientation applied, any pixel
format to 8-bit RGB, large JPEGs decoded in draft mode). A file's format follows its name: JPEGs
are saved at quality 95 without chroma subsampling, PNGs losslessly. An image whose shorter side
is already <= `size`, and a file that cannot be read, is copied byte for byte, so the reader sees
exactly what it saw under SRC (and `data.skip_bad_images` skips the same files). Same names,
same sorted order: training on DST with `data.load_size <= size` sees the same batches as on SRC,
up to the JPEG re-encoding (exactly, for images that were copied).

Writing is atomic and resumable: a new DST is built in a hidden sibling `.NAME.partial` (each file
written whole through a temporary name) and renamed into place at the end; an interrupted run
leaves the partial folder, and the next run continues it. Run again on a finished DST, only the
images that are new or changed under SRC (size or modification time) are written. DST/prepared.json
(the manifest) records the source, the size, and per file its source and output sizes.
SIGINT / SIGTERM stop after saving the manifest of what is finished (`PrepareInterrupted`, exit
130 / 143), so the rerun skips those images. DST may not be, hold or lie inside SRC, one process
writes a DST at a time (the lock `.NAME.cebench.lock` beside it), and `--force` replaces a DST
only when everything in it was written by `data prepare` (it is in the manifest).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from cebench.core.errors import ConfigError, DatasetError
from cebench.core.io import atomic_write_text
from cebench.core.lock import LOCK_NAME, FolderLock, refuse_overlap
from cebench.core.threads import check_workers
from cebench.data.images import list_images, load_rgb

MANIFEST = "prepared.json"
FORMAT = "cebench-prepare/1"
JPEG_QUALITY = 95
_SAVE = {
    "JPEG": {"quality": JPEG_QUALITY, "subsampling": 0},
    "PNG": {"compress_level": 3},
    "WEBP": {"quality": JPEG_QUALITY},
}


def shorter_side_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) resized so the shorter side is `side` (pretraining's `resize_shorter` rounding)."""
    scale = side / min(w, h)
    return max(side, round(w * scale)), max(side, round(h * scale))


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class PrepareInterrupted(Exception):
    """SIGINT / SIGTERM stopped `prepare`; what was finished is in the manifest (a rerun skips it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


class _StopOnSignal:
    """SIGINT / SIGTERM raise PrepareInterrupted in the main thread (so `prepare`'s `finally`
    saves the manifest of the finished images) instead of killing the process outright."""

    def __init__(self) -> None:
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise PrepareInterrupted(signum)

    def restore(self) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)
        self.old = {}


def _ignore_signals() -> None:
    """Worker processes leave SIGINT / SIGTERM to the parent, which stops them after their image."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def prepare_one(src: Path, dst: Path, size: int) -> dict[str, Any]:
    """Write one image (see module doc); returns its manifest entry."""
    entry: dict[str, Any] = {"source": _stamp(src)}
    tmp = dst.with_name(f".{dst.name}.tmp{dst.suffix}")
    try:
        img = load_rgb(src, draft_side=size)
    except DatasetError as e:
        entry.update(copied=True, unreadable=str(e))
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return entry
    try:
        with Image.open(src) as im:  # the header's size (before EXIF rotation): draft-free
            full = im.size
    except OSError:
        full = img.size
    entry["source_size"] = list(full)
    if min(full) <= size:
        shutil.copyfile(src, tmp)
        entry.update(copied=True, size=list(img.size))
    else:
        w, h = img.size
        img = img.resize(shorter_side_size(w, h, size), Image.BICUBIC)
        fmt = Image.registered_extensions().get(dst.suffix.lower(), "PNG")
        img.save(tmp, format=fmt, **_SAVE.get(fmt, {}))
        entry.update(copied=False, size=list(img.size))
    os.replace(tmp, dst)
    return entry


def _load_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a manifest written by cebench data prepare")
    return data


def prepare(
    src: str | Path,
    dst: str | Path,
    size: int,
    *,
    workers: int = 1,
    force: bool = False,
    say: Any = None,
) -> dict[str, Any]:
    """Write (or bring up to date) the resized copy of `src` in `dst`; returns the manifest with
    "written", "kept" and "seconds" added. See the module doc."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if size < 8:
        raise ConfigError(f"--size must be >= 8 pixels, got {size}")
    check_workers(workers, "--workers")
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder of images")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"--out {dst}: is a file, not a folder")
    refuse_overlap(dst, {"SRC": src})
    if dst.is_dir() and any(dst.iterdir()):  # refused before the lock: a refusal leaves nothing
        _check_out(dst, {"format": FORMAT, "source": str(src.resolve()), "size": size}, force)
    # one writer per --out: the lock file sits beside it (DST itself is renamed into place)
    with FolderLock(
        dst.parent, "cebench data prepare", lock_name=f".{dst.name}.cebench.lock", shown=dst
    ):
        return _prepare_locked(src, dst, size, workers, force, say)


def _check_out(dst: Path, settings: dict[str, Any], force: bool) -> bool:
    """Whether the non-empty `dst` is this source at this size (work goes on in it); ConfigError
    when it holds files `data prepare` did not write (even with --force) or, without --force,
    another source or size."""
    old = _load_manifest(dst)
    same = old is not None and all(old.get(k) == v for k, v in settings.items())
    foreign = [] if same else _foreign(dst, old)
    if foreign:  # --force replaces only what cebench data prepare wrote
        raise ConfigError(
            f"--out {dst}: holds files not written by cebench data prepare "
            f"({foreign[0]}{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); "
            "choose another --out (--force never deletes files cebench did not write)"
        )
    if not same and not force:
        raise ConfigError(
            f"--out {dst}: holds another source or size; choose another --out or pass "
            "--force to replace it"
        )
    return same


def _foreign(folder: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Files under `folder` that `data prepare` did not write (not in its manifest)."""
    ours = set((manifest or {}).get("files", {})) | {MANIFEST, LOCK_NAME}
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel not in ours and not _is_our_temp(name):
                found.append(rel)
    return sorted(found)


def _is_our_temp(name: str) -> bool:
    """`prepare_one`'s and `atomic_write_text`'s temporary names (left by a killed run)."""
    return name.startswith(".") and (".tmp" in name)


def _prepare_locked(
    src: Path, dst: Path, size: int, workers: int, force: bool, say: Any
) -> dict[str, Any]:
    paths = list_images(src)
    rels = [p.relative_to(src).as_posix() for p in paths]
    settings = {"format": FORMAT, "source": str(src.resolve()), "size": size}

    partial = dst.parent / f".{dst.name}.partial"
    old = _load_manifest(dst) if dst.is_dir() else None
    if dst.is_dir() and any(dst.iterdir()):
        same = _check_out(dst, settings, force)
        if not same:  # --force: start over beside it, replace it at the end
            shutil.rmtree(partial, ignore_errors=True)
            work, old = partial, None
        else:
            work = dst
    else:
        work = partial
        old = _load_manifest(partial) if partial.is_dir() else None
        if old is not None and any(old.get(k) != v for k, v in settings.items()):
            shutil.rmtree(partial)
            old = None
    try:
        work.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"--out {dst}: {work} is a file, not a folder") from None
    recorded = set(old["files"]) if old else set()
    files: dict[str, Any] = dict(old["files"]) if old else {}
    todo = []
    for p, rel in zip(paths, rels, strict=True):
        out = work / rel
        entry = files.get(rel)
        if entry is not None and out.is_file() and entry.get("source") == _stamp(p):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        todo.append((p, out, rel))
    start = time.perf_counter()

    def save_manifest() -> None:
        kept = {r: files[r] for r in rels if r in files}
        atomic_write_text(
            work / MANIFEST,
            json.dumps({**settings, "count": len(kept), "files": kept}, indent=1) + "\n",
        )

    done = 0
    stop = _StopOnSignal()
    try:
        if workers == 1:
            results = (prepare_one(p, out, size) for p, out, _ in todo)
        else:
            pool = cf.ProcessPoolExecutor(workers, initializer=_ignore_signals)
            results = pool.map(prepare_one, *zip(*[(p, o, size) for p, o, _ in todo], strict=True))
        for (_, _, rel), entry in zip(todo, results, strict=False):
            files[rel] = entry
            done += 1
            if done % 200 == 0:
                save_manifest()  # a resumed run skips what is recorded here
                if say:
                    say(f"prepare: {done}/{len(todo)} images")
    finally:
        stop.restore()
        if workers > 1 and todo:
            pool.shutdown(cancel_futures=True)
        save_manifest()
    # a file under DST that SRC no longer has would change the training set: remove it
    wanted = set(rels) | {MANIFEST}
    try:
        present = list_images(work)
    except DatasetError:  # no image at all (every source file unreadable and absent)
        present = []
    for p in present:  # only files this command wrote (in its manifest) are ever removed
        rel = p.relative_to(work).as_posix()
        if rel not in wanted and rel in recorded:
            p.unlink()
    if work == partial:
        if dst.exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, tmp / "old")
            os.replace(partial, dst)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(partial, dst)
    info = _load_manifest(dst) or {}
    info.update(written=done, kept=len(rels) - done, seconds=round(time.perf_counter() - start, 3))
    return info
