"""Selective search region proposals (Uijlings et al., IJCV 2013), computed once per image and cached.

    cache = ProposalCache(Path("runs/proposal-cache"), mode="fast", max_boxes=2000)
    boxes = cache.boxes(path, pil_image)    # float32 [N, 4] x1, y1, x2, y2 in the image's pixels
    cache.computed, cache.hits              # what this process computed and what it reused

Fast R-CNN (Girshick, ICCV 2015) trained and tested on selective search boxes ("fast" mode, about
2,000 per image), computed once per image, so the proposals do not depend on the features under
test (an RPN's do). This is OpenCV's implementation (opencv-contrib, `cv2.ximgproc.segmentation`)
on the image at its own size: the boxes in OpenCV's order (its hierarchical-grouping rank),
duplicates removed, the first `max_boxes` kept; an image with none gets the whole-image box.
OpenCV's rank has a random factor (as Uijlings et al.'s) that its seed functions do not fix, so
two computations may order, and with more than `max_boxes` keep, different boxes: the cache
fixes each image's boxes once, for every later run and arm.

The cache holds one .npy per image, named by a hash of the image file's resolved path, size and
modification time and of the settings (mode, max_boxes, this module's version), written
atomically: a later run, another arm or another process with the same settings reads it back.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cebench.core.errors import ConfigError, DatasetError
from cebench.core.io import atomic_write_bytes

SS_MODES = ("fast", "quality", "single")
VERSION = 1  # bump when the computation changes: old cache entries are then not used


def selective_search(
    img: Any, mode: Literal["fast", "quality", "single"] = "fast", max_boxes: int = 2000
) -> np.ndarray:
    """Selective search boxes of a PIL RGB image (or uint8 [H, W, 3] RGB array): float32 [N, 4]."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ConfigError(f"selective search needs opencv-contrib-python-headless ({e})") from None
    if not hasattr(cv2, "ximgproc"):
        raise ConfigError(
            "selective search needs OpenCV's contrib modules (cv2.ximgproc): install "
            "opencv-contrib-python-headless in place of opencv-python-headless"
        )
    if mode not in SS_MODES:
        raise ConfigError(f"config key 'ss_mode' must be one of {list(SS_MODES)}, got {mode!r}")
    rgb = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, dtype=np.uint8)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
    {
        "fast": ss.switchToSelectiveSearchFast,
        "quality": ss.switchToSelectiveSearchQuality,
        "single": ss.switchToSingleStrategy,
    }[mode]()
    rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)  # x, y, w, h
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)][:max_boxes]
    if not len(boxes):
        h, w = rgb.shape[:2]
        boxes = np.array([[0, 0, w, h]], dtype=np.float32)
    return boxes.astype(np.float32)


class ProposalCache:
    """Selective search boxes per image file, computed on first use and kept in `folder` (None:
    computed every time, nothing written). `computed` and `hits` count this process's calls."""

    def __init__(self, folder: Path | None, mode: str = "fast", max_boxes: int = 2000) -> None:
        if mode not in SS_MODES:
            raise ConfigError(f"config key 'ss_mode' must be one of {list(SS_MODES)}, got {mode!r}")
        if max_boxes < 1:
            raise ConfigError(f"config key 'ss_max_proposals' must be >= 1, got {max_boxes}")
        self.folder = Path(folder) if folder is not None else None
        self.mode, self.max_boxes = mode, max_boxes
        self.computed = self.hits = 0

    def key(self, path: str | Path) -> str:
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the image for its proposals ({e})") from None
        parts = {
            "path": str(p),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "method": "opencv-selective-search",
            "mode": self.mode,
            "max_boxes": self.max_boxes,
            "version": VERSION,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def entry(self, path: str | Path) -> Path | None:
        if self.folder is None:
            return None
        k = self.key(path)
        return self.folder / k[:2] / f"{k}.npy"

    def boxes(self, path: str | Path, img: Any = None) -> np.ndarray:
        """The image's boxes: from the cache, else computed (from `img` if given, else the file)."""
        entry = self.entry(path)
        if entry is not None and entry.is_file():
            try:
                boxes = np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                boxes = None  # unreadable entry: computed again and replaced
            if boxes is not None and boxes.ndim == 2 and boxes.shape[1] == 4:
                self.hits += 1
                return boxes.astype(np.float32)
        if img is None:
            from cebench.data import load_rgb

            img = load_rgb(path)
        boxes = selective_search(img, self.mode, self.max_boxes)
        self.computed += 1
        if entry is not None:
            buf = io.BytesIO()
            np.save(buf, boxes, allow_pickle=False)
            atomic_write_bytes(entry, buf.getvalue())
        return boxes


def default_cache_dir(out_dir: str | Path | None) -> Path:
    """`<out>/../proposal-cache` (shared by the cells of a benchmark run), else
    ~/.cache/cebench/proposals."""
    import os

    if out_dir:
        return Path(out_dir).resolve().parent / "proposal-cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cebench" / "proposals"
