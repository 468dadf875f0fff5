"""Listing the image files of a folder tree, and a cache of that listing for ImageNet-sized trees.

    from cebench.data.listing import image_tree
    files = image_tree("data/imagenet/train")   # sorted path strings (what list_images returns as Paths)

Listing 1.28M files (ImageNet's train/) walks 1,000 folders and takes tens of seconds; a tree of at
least CACHE_MIN_FILES images is therefore remembered in a cache file, one per tree, holding each
folder's image names and its modification time. The next listing only stats the folders (1,000
calls) and reads the cache: any folder whose mtime changed (a file added, removed or renamed in
it, a sub-folder added) makes the whole tree be listed again. Renaming or editing a file in place
does not change which names are listed, so the mtimes are all it takes.

Where: CEBENCH_LISTING_CACHE (a folder; "off" or "0" turns it off), else
$XDG_CACHE_HOME/cebench/listings (default ~/.cache/cebench/listings). A cache file that cannot be
read or written is ignored (the tree is listed), never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

CACHE_MIN_FILES = 20_000  # smaller trees list in well under a second: not cached
CACHE_VERSION = 1
# a folder modified this recently may still be changing within the same mtime tick: not cached
SETTLE_S = 2.0


def cache_dir() -> Path | None:
    """The listing cache's folder, or None when CEBENCH_LISTING_CACHE turns it off."""
    env = os.environ.get("CEBENCH_LISTING_CACHE", "").strip()
    if env.lower() in ("off", "0", "false", "no"):
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cebench" / "listings"


def _walk(root: str, suffixes: tuple[str, ...]) -> dict[str, list]:
    """{folder relative to root ("" = root): [mtime_ns, sorted image names]}; hidden entries and
    symlinked folders' contents skipped (as os.walk(followlinks=False))."""
    out: dict[str, list] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        try:
            mtime = os.stat(full).st_mtime_ns
            entries = list(os.scandir(full))
        except OSError:  # vanished or unreadable, as os.walk: skipped
            continue
        names = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if is_dir:
                if not e.is_symlink():
                    stack.append(os.path.join(rel, e.name) if rel else e.name)
            elif e.name.lower().endswith(suffixes):
                try:  # regular files only (symlinks followed): a FIFO's read would block
                    regular = e.is_file()
                except OSError:
                    continue
                if regular:
                    names.append(e.name)
        out[rel] = [mtime, sorted(names)]
    return out


def _files(root: str, dirs: dict[str, list]) -> list[str]:
    """The full path strings, in the order sorted(Path) gives (part by part, not character by
    character: "a/b.jpg" before "a-c.jpg"): each folder's files and sub-folders in name order,
    a sub-folder's files in its place. No global sort: each folder's names are sorted already."""
    children: dict[str, list[str]] = {}
    for rel in dirs:
        if rel:
            parent, _, name = rel.rpartition(os.sep)
            children.setdefault(parent, []).append(name)
    out: list[str] = []

    def emit(rel: str, prefix: str) -> None:
        names, subs = dirs[rel][1], children.get(rel)
        if not subs:  # the common case (an ImageNet class folder): its files, in order
            out.extend([prefix + n for n in names])
            return
        for name, is_dir in sorted([(n, False) for n in names] + [(d, True) for d in subs]):
            if is_dir:
                emit(os.path.join(rel, name) if rel else name, prefix + name + os.sep)
            else:
                out.append(prefix + name)

    if "" in dirs:
        emit("", os.path.join(root, ""))
    return out


def _cache_file(root: str, folder: Path) -> Path:
    return folder / (hashlib.sha1(os.path.realpath(root).encode()).hexdigest()[:20] + ".json")


def _load(path: Path, root: str) -> dict[str, list] | None:
    """The cached folders if every one still has its recorded mtime (else None)."""
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or data.get("root") != os.path.realpath(root):
            return None
        dirs = data["dirs"]
        for rel, (mtime, _) in dirs.items():
            if os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime:
                return None
        return dirs
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(path: Path, root: str, dirs: dict[str, list]) -> None:
    newest = max(m for m, _ in dirs.values()) / 1e9
    if time.time() - newest < SETTLE_S:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(
            json.dumps({"version": CACHE_VERSION, "root": os.path.realpath(root), "dirs": dirs})
        )
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
    except OSError:
        tmp.unlink(missing_ok=True)


def image_tree(root: str | Path, suffixes: tuple[str, ...], use_cache: bool = True) -> list[str]:
    """Sorted path strings of the files under `root` whose lower-cased name ends with one of
    `suffixes` (recursive, hidden files and folders skipped); from the cache when it is valid."""
    root = str(root)
    folder = cache_dir() if use_cache else None
    cache = _cache_file(root, folder) if folder is not None else None
    dirs = _load(cache, root) if cache is not None and cache.is_file() else None
    if dirs is None:
        dirs = _walk(root, suffixes)
        if cache is not None and sum(len(n) for _, n in dirs.values()) >= CACHE_MIN_FILES:
            _save(cache, root, dirs)
    return _files(root, dirs)
