"""SBD, the Semantic Boundaries Dataset (Hariharan et al., ICCV 2011): FCN's segmentation training set.

    ds = SBDSegmentation("benchmark_RELEASE/dataset", "train", exclude=valid_ids)
    img, mask = ds[0]                      # PIL RGB image, int64[H, W] (0 background, 1..20, 255 ignore)
    valid = seg11valid(read_id_list(voc11 / "ImageSets/Segmentation/val.txt"), ds.listed)

Layout (`benchmark_RELEASE/dataset/`): img/<id>.jpg, cls/<id>.mat, train.txt (8,498 ids) and
val.txt (2,857). Each cls/<id>.mat holds a 1x1 MATLAB struct `GTcls` with the fields Boundaries
(a cell of sparse boundary maps), Segmentation (uint8 H x W: 0 background, 1..20 the VOC
classes) and CategoriesPresent; scipy reads it as a (1, 1) structured array, and FCN's data layer
takes `mat['GTcls'][0]['Segmentation'][0]`, as `read_sbd_label` does.

FCN's split (its data/pascal/README): train on SBD train; score on seg11valid, the 736 images of
VOC2011's segmentation val that are not in SBD train (the two sets intersect). `seg11valid`
computes it from the two lists; `SBDSegmentation(..., exclude=)` drops any validation id from
the training list (none for FCN's lists, by construction; a guard for others).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.core.errors import DatasetError
from cebench.data.images import load_rgb
from cebench.data.voc import IGNORE_INDEX, VOC_CLASSES


def sbd_root(path: str | Path) -> Path:
    """The folder holding img/, cls/ and the lists: `path` itself, or its `dataset/` or
    `benchmark_RELEASE/dataset/` (SBD's tarball unpacks to benchmark_RELEASE/dataset)."""
    p = Path(path)
    for cand in (p, p / "dataset", p / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir() and (cand / "img").is_dir():
            return cand
    raise DatasetError(
        f"{path}: not an SBD folder (expected img/ and cls/ here or under dataset/ or "
        "benchmark_RELEASE/dataset/)"
    )


def read_id_list(path: str | Path) -> list[str]:
    """Image ids of a split list (first token of each non-empty line), in file order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: empty split list")
    return ids


def seg11valid(voc_val: Iterable[str], sbd_train: Iterable[str]) -> list[str]:
    """FCN's seg11valid: the VOC2011 segmentation val ids not in SBD train, in `voc_val`'s order."""
    train = set(sbd_train)
    return [i for i in voc_val if i not in train]


def read_sbd_label(path: str | Path) -> np.ndarray:
    """The class map of one cls/<id>.mat: `GTcls.Segmentation` as uint8 [H, W]."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: not a readable .mat file ({e})") from None
    try:
        seg = mat["GTcls"][0]["Segmentation"][0]
    except (KeyError, IndexError, ValueError) as e:
        raise DatasetError(
            f"{path}: no GTcls.Segmentation (SBD's cls/*.mat layout expected): {e}"
        ) from None
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise DatasetError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected H x W")
    return seg.astype(np.uint8)


class SBDSegmentation(torch.utils.data.Dataset):
    """SBD's class segmentation: `ds[i] -> (PIL image, mask int64[H, W])`, 255 = ignore.

    `split` names a list of the SBD folder (train, val); ids in `exclude` are left out.
    `classes`: the 20 VOC classes (SBD's labels 1..20 are theirs, in order)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        exclude: Iterable[str] = (),
        classes: list[str] | tuple[str, ...] = VOC_CLASSES,
    ) -> None:
        self.root = sbd_root(root)
        self.split = split
        self.classes = list(classes)
        self.listed = read_id_list(self.root / f"{split}.txt")
        drop = set(exclude)
        self.ids = [i for i in self.listed if i not in drop]
        if not self.ids:
            raise DatasetError(f"{self.root / (split + '.txt')}: no ids left after the exclusions")
        self.images = [self.root / "img" / f"{i}.jpg" for i in self.ids]
        self.masks = [self.root / "cls" / f"{i}.mat" for i in self.ids]
        missing = [str(p) for p in (*self.images, *self.masks) if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{missing[0]}: listed in {split}.txt but not found ({len(missing)} files missing)"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        img = load_rgb(self.images[index])
        mask = read_sbd_label(self.masks[index]).astype(np.int64)
        if mask.shape != (img.size[1], img.size[0]):
            raise DatasetError(
                f"{self.masks[index]}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{img.size[0]}x{img.size[1]}"
            )
        bad = (mask > len(self.classes)) & (mask != IGNORE_INDEX)
        if bad.any():
            raise DatasetError(
                f"{self.masks[index]}: label {int(mask[bad][0])} outside 0..{len(self.classes)}"
            )
        return img, torch.from_numpy(mask)

    def __repr__(self) -> str:
        return f"SBDSegmentation({self.root}, split={self.split!r}, {len(self)} images)"


def write_sbd_label(path: str | Path, seg: np.ndarray) -> None:
    """Write `seg` (uint8 [H, W]) as SBD writes cls/<id>.mat: a 1x1 struct GTcls with the fields
    Boundaries (one empty sparse map per class), Segmentation and CategoriesPresent (a column of
    the labels present besides background). For tests and generated data."""
    import scipy.io
    import scipy.sparse

    seg = np.asarray(seg, dtype=np.uint8)
    gt = np.empty(
        (1, 1), dtype=[("Boundaries", "O"), ("Segmentation", "O"), ("CategoriesPresent", "O")]
    )
    bounds = np.empty((len(VOC_CLASSES), 1), dtype=object)
    for k in range(len(VOC_CLASSES)):
        bounds[k, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=bool)
    gt[0, 0]["Boundaries"] = bounds
    gt[0, 0]["Segmentation"] = seg
    present = sorted(int(v) for v in np.unique(seg) if 0 < v < IGNORE_INDEX)
    gt[0, 0]["CategoriesPresent"] = np.array(present, dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"GTcls": gt})
