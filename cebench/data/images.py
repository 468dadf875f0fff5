"""Image files: finding them, loading any of them as RGB, and an unlabelled-image dataset.

    from cebench.data import list_images, load_rgb, ImageFiles
    paths = list_images("data/builtin/unlabelled")      # recursive, sorted
    img = load_rgb(paths[0])                             # PIL RGB, whatever the file's mode
    ds = ImageFiles("data/builtin/unlabelled", transform=my_transform)

`load_rgb` is the single place where pixel formats are normalised: grayscale, palette, RGBA/LA
(composited over white, because the colour under a transparent pixel is arbitrary), CMYK,
YCbCr, and 16/32-bit integer or float images (scaled to 0..255, never clipped). Any failure to
read raises `DatasetError` naming the file, and so does an image larger than the pixel limit
(`max_pixels`, default DEFAULT_MAX_PIXELS; checked from the header before anything is decoded, so
a small file that would decode to gigabytes costs nothing). `set_max_pixels(n)` changes the
process-wide limit (pretraining's `data.max_pixels`, `cebench data check --max-pixels`).

`load_rgb(path, draft_side=n)` decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
PIL's draft mode) when its shorter side stays at least DRAFT_GAP x n, the way PIL's `thumbnail`
does: a 4000x3000 photo for a 72 px crop decodes as 500x375, about 10x cheaper. Deterministic;
PNGs and small JPEGs decode exactly as without it.

Decoded images (and VOC segmentation masks) are kept in memory per process, up to
CEBENCH_IMAGE_CACHE_MB (default 128 MiB; 0 turns the cache off), and a copy is returned when the
same file (same path, inode, size, modification and change time) is asked for again with the same
arguments: the benchmark suite reads its small images again in every epoch and in every cell a
worker process runs. Decoding is deterministic, so the pixels are the same either way.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cebench.core.env import env_number
from cebench.core.errors import DatasetError
from cebench.data.listing import image_tree

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Errors PIL and its decoders raise for broken files; anything else is a real bug and propagates.
_READ_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)
# PIL's own "could be a decompression bomb" level (it refuses outright at twice this): about
# 9459 x 9459, 268 MB as 8-bit RGB
DEFAULT_MAX_PIXELS = 89_478_485
_LIMIT = {"max_pixels": DEFAULT_MAX_PIXELS}
# draft decoding keeps the shorter side at least this many times the target (PIL's thumbnail uses
# reducing_gap=2.0): the final bicubic resize then still does the antialiasing
DRAFT_GAP = 2.0
DEFAULT_CACHE_MB = 128
# (what, path, device, inode, size, mtime, ctime) -> (bytes, value); filled until the byte budget is
# spent, never evicted (a dataset larger than the budget keeps its first files)
_CACHE: dict[tuple, tuple[int, Any]] = {}
_CACHE_USED = {"bytes": 0}


def cache_limit_bytes() -> int:
    """The decoded-file cache's budget: CEBENCH_IMAGE_CACHE_MB (MiB, 0 = off), default 128."""
    mb = env_number("CEBENCH_IMAGE_CACHE_MB", DEFAULT_CACHE_MB)
    return int(mb * 2**20)


def clear_file_cache() -> None:
    """Forget every cached decoded file (`load_rgb`, VOC segmentation masks)."""
    _CACHE.clear()
    _CACHE_USED["bytes"] = 0


def file_key(path: Path, what: tuple) -> tuple | None:
    """The cache key of a regular file (None: no such file): `what` (reader and its arguments) and
    the file's identity (path, device, inode, size, modification and change times), so a
    rewritten file is read again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    # ctime too: a rewrite that keeps the size and sets the old mtime back (cp -p, rsync -t,
    # tar, os.utime) still changes it, and no user can set it
    return (*what, str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def cached(key: tuple) -> Any:
    """The cached value for `key`, or None (also when the budget is 0)."""
    hit = _CACHE.get(key) if cache_limit_bytes() else None
    return None if hit is None else hit[1]


def cached_read(key: tuple, read: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
    """`read()`'s value for `key`, from the cache when there (the caller copies it before handing
    it out); kept if the budget allows. Errors are never cached. A budget of 0 bypasses the
    cache, entries made before included."""
    limit = cache_limit_bytes()
    if not limit:
        return read()
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[1]
    value = read()
    n = nbytes(value)
    if _CACHE_USED["bytes"] + n <= limit:
        _CACHE[key] = (n, value)
        _CACHE_USED["bytes"] += n
    return value


def max_pixels_limit() -> int:
    """The process-wide pixel limit of `load_rgb` (see `set_max_pixels`)."""
    return _LIMIT["max_pixels"]


def set_max_pixels(max_pixels: int) -> int:
    """Set the process-wide pixel limit of `load_rgb` (0 = PIL's own); returns the previous one."""
    if max_pixels < 0:
        raise DatasetError(f"the pixel limit must be >= 0, got {max_pixels}")
    old, _LIMIT["max_pixels"] = _LIMIT["max_pixels"], max_pixels or DEFAULT_MAX_PIXELS
    return old


def too_large(path: str | Path, size: tuple[int, int], max_pixels: int | None = None) -> str | None:
    """The problem with an image of `size` (w, h) under the pixel limit, or None."""
    limit = max_pixels or _LIMIT["max_pixels"]
    w, h = size
    if w * h <= limit:
        return None
    gb = w * h * 3 / 1e9
    cost = f" ({gb:.2f} GB decoded)" if gb >= 0.01 else ""
    return (
        f"{path}: image is {w}x{h} = {_pixels(w * h)}{cost}, over the limit of {_pixels(limit)}; "
        "raise data.max_pixels / --max-pixels or shrink the image"
    )


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx" if n >= 100_000 else f"{n} px"


def is_regular_file(path: str | Path) -> bool:
    """A regular file (symlinks followed): never a FIFO, a socket or a device, whose read could
    wait forever or never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def has_image_suffix(name: str | Path) -> bool:
    """The name ends in an IMAGE_EXTENSIONS suffix (says nothing of what the file is)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def is_image_file(path: str | Path) -> bool:
    """The one image predicate every listing uses: an IMAGE_EXTENSIONS suffix on a regular file
    (`is_regular_file`; a FIFO named x.png is not an image). `path` must be a full path."""
    return has_image_suffix(path) and is_regular_file(path)


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root` (recursive, sorted, hidden files skipped).

    Raises DatasetError if `root` does not exist or holds no image with an IMAGE_EXTENSIONS suffix.
    """
    return [Path(f) for f in list_image_strings(root)]


def list_image_strings(root: str | Path) -> list[str]:
    """`list_images` as path strings: a Path per file costs more than listing it (0.6 s per
    100k files), so a caller that only opens the files (pretraining) takes these."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or directory")
    if not root.is_dir():
        if is_image_file(root):
            return [str(root)]
        if not is_regular_file(root):
            raise DatasetError(f"{root}: not a regular file or a folder (a FIFO, socket or device)")
        raise DatasetError(
            f"{root}: not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})"
        )
    # a large tree's listing is cached, keyed by its folders' mtimes (cebench.data.listing);
    # only regular files are listed (a FIFO named x.png would block its reader)
    found = image_tree(root, IMAGE_EXTENSIONS)
    if not found:
        raise DatasetError(
            f"{root}: no images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return found


def first_image(root: str | Path) -> Path:
    """The first image `list_images(root)` would give, without listing the whole tree."""
    root = Path(root)
    if root.is_file():
        return list_images(root)[0]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(
            f
            for f in filenames
            if not f.startswith(".") and is_image_file(os.path.join(dirpath, f))
        )
        if names:
            # a file of this folder sorts before its sub-folders' only if its name is smaller
            sub = [d for d in dirnames if d < names[0]]
            if not sub:
                return Path(dirpath) / names[0]
    return list_images(root)[0]


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a wide-range single-channel array to 0..255 by its nominal range (not its min/max)."""
    arr = arr.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F":
        # float images are either 0..1 or 0..255 by convention; larger values are treated as 16-bit
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        top = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    else:  # "I": 32-bit container, in practice holding 8- or 16-bit data (e.g. 16-bit PNG)
        peak = float(arr.max()) if arr.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    out = np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255)
    return np.round(out).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already-opened PIL image of any mode to 8-bit RGB (see module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        # palette images may carry transparency; expand it so it can be composited
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def draft_scale(size: tuple[int, int], side: int, gap: float = DRAFT_GAP) -> int:
    """The JPEG DCT scale denominator (8, 4, 2 or 1) for an image of `size` (w, h) that is going
    to be resized to shorter side `side`: the largest whose decoded shorter side is >= gap x side."""
    if side <= 0:
        return 1
    short = min(size)
    for s in (8, 4, 2):
        if -(-short // s) >= gap * side:
            return s
    return 1


def load_rgb(
    path: str | Path, max_pixels: int | None = None, draft_side: int = 0, cache: bool = True
) -> Image.Image:
    """Load an image file as an 8-bit RGB PIL image (EXIF orientation applied).

    `draft_side` > 0: the caller resizes the result to that shorter side, so a large JPEG may be
    decoded at reduced scale (`draft_scale`; the result's shorter side stays >= DRAFT_GAP x it).
    Raises DatasetError naming the file if it is missing, truncated, not a readable image, or
    larger than `max_pixels` (default: the process-wide limit, see `set_max_pixels`).
    """
    path = Path(path)
    key = file_key(path, ("rgb", draft_side))
    if key is None:  # missing, or not a regular file (a FIFO would block the read forever)
        if path.exists():
            raise DatasetError(f"{path}: not a regular file (a FIFO, socket or device)")
        raise DatasetError(f"{path}: image file not found")
    if not cache or not cache_limit_bytes():  # cache=False: the caller keeps what it derives
        return _decode(path, max_pixels, draft_side)[1]
    header_size, img = cached_read(
        key,
        lambda: _decode(path, max_pixels, draft_side),
        lambda v: v[1].size[0] * v[1].size[1] * 3,
    )
    problem = too_large(path, header_size, max_pixels)  # the limit may have changed since
    if problem:
        raise DatasetError(problem)
    return img.copy()


def _decode(
    path: Path, max_pixels: int | None, draft_side: int
) -> tuple[tuple[int, int], Image.Image]:
    """`load_rgb` without the cache: (the header's size, the decoded RGB image)."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        # PIL's bomb warning and error: our own limit speaks instead, from the header's size
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except _READ_ERRORS as e:
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    header_size = im.size  # before any draft shrinks it
    problem = too_large(path, header_size, max_pixels)
    if problem:
        im.close()
        raise DatasetError(problem)
    if draft_side and im.format == "JPEG":
        scale = draft_scale(im.size, draft_side)
        if scale > 1:  # asks for exactly 1/scale (PIL picks the largest scale that fits)
            im.draft(im.mode, (im.size[0] // scale, im.size[1] // scale))
    try:
        with im:
            im.load()  # decode now, so truncated files fail here and not later in a worker
            im = ImageOps.exif_transpose(im)
            return header_size, to_rgb(im)
    except _READ_ERRORS as e:
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


class ImageFiles:
    """Unlabelled images: `ds[i]` is `transform(load_rgb(path_i))`, or the PIL image without one."""

    def __init__(
        self, root_or_paths: str | Path | Sequence[str | Path], transform: Callable | None = None
    ):
        if isinstance(root_or_paths, (str, Path)):
            self.paths = list_images(root_or_paths)
        else:
            self.paths = [Path(p) for p in root_or_paths]
            if not self.paths:
                raise DatasetError("ImageFiles: the list of image paths is empty")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        img = load_rgb(self.paths[index])
        return self.transform(img) if self.transform is not None else img

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images)"
