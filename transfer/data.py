"""Datasets for the transfer harnesses: format detection, transforms, low-shot subsets.

    fmt, root = find_format("data/builtin")            # ("voc", data/builtin/VOC)
    train, val = classification_splits(root, fmt, "train", "val", size=64, normalize=MINUS_ONE_ONE)
    img, target = train[0]   # target: class index (ImageFolder) or float[C] in {1, 0, -1} (VOC)

`--data` may be a VOC root (JPEGImages + ImageSets), an ImageFolder root (train/ and val/ with one
sub-folder per class), or the built-in data's root (its VOC/ is used). Images are resized to the
encoder's square input; training adds random horizontal flips. Classification views can instead
crop (`ClassificationView.crop`): "random" (training: resize to `resize_size`, a random
`size` crop and a flip), "center" (one centre crop) or "ten" (the 4 corners and the centre of the
resized image and their flips, stacked as [10, 3, size, size]) or "random-ten" (ten random crops,
each with the training crops' scale jitter).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from cebench.core.errors import ConfigError, DatasetError
from cebench.data.layout import transfer_root


def find_format(data: str | Path) -> tuple[str, Path]:
    """('voc' | 'imagefolder', root) for a `--data` directory (`cebench.data.layout.transfer_root`)."""
    return transfer_root(data)


def files_fingerprint(paths: Sequence[Path], extra: str = "") -> str:
    """Hash of file names, sizes and modification times: a dataset's identity for the feature cache."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def to_tensor(
    img, size: int, normalize: dict[str, list[float]], flip: bool = False
) -> torch.Tensor:
    """PIL image -> normalised float tensor [3, size, size]."""
    img = TF.resize(img, [size, size], antialias=True)
    if flip:
        img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), normalize["mean"], normalize["std"])


CROPS = ("none", "random", "center", "ten", "random-ten")


def default_resize(size: int) -> int:
    """The side images are resized to before cropping: AlexNet's 256 for 227 (same ratio)."""
    return round(size * 256 / 227)


def random_crop(
    img,
    size: int,
    big: int,
    rng: random.Random,
    scale: tuple[float, float] = (1.0, 1.0),
    fill: tuple[int, ...] = (0, 0, 0),
):
    """A random `size` window of `img` resized to `big` x `big` (times a random factor s ~
    U(scale), Krähenbühl et al.'s 0.5-2x jitter, when scale != (1, 1)), flipped with p 0.5. A
    scaled image smaller than the window is placed at a random position on a `fill` canvas."""
    side = big
    if scale != (1.0, 1.0):
        side = max(1, round(big * rng.uniform(*scale)))
    img = TF.resize(img, [side, side], antialias=True)
    if side < size:
        canvas = Image.new("RGB", (size, size), tuple(fill))
        canvas.paste(img, (rng.randint(0, size - side), rng.randint(0, size - side)))
        img, side = canvas, size
    top, left = rng.randint(0, side - size), rng.randint(0, side - size)
    out = TF.crop(img, top, left, size, size)
    return TF.hflip(out) if rng.random() < 0.5 else out


def crop_images(
    img,
    size: int,
    crop: str,
    resize_size: int | None = None,
    rng: random.Random | None = None,
    scale: tuple[float, float] = (1.0, 1.0),
    fill: tuple[int, ...] = (0, 0, 0),
) -> list:
    """PIL image -> the list of PIL crops a view feeds the network (one, or ten for "ten" and
    "random-ten").

    "none": resized to size x size; otherwise resized to resize_size x resize_size (default
    `default_resize(size)`) and cropped: "random" (`random_crop`: random position and flip, with
    the `scale` jitter), "center", "ten" (torchvision's `ten_crop`: 4 corners + centre, then their
    flips) or "random-ten" (ten `random_crop`s, the test crops of Krähenbühl et al.'s code)."""
    if crop == "none":
        return [TF.resize(img, [size, size], antialias=True)]
    big = resize_size or default_resize(size)
    if big < size:
        raise ConfigError(f"config key 'resize_size' must be >= the input size {size}, got {big}")
    if crop in ("random", "random-ten"):
        r = rng or random
        n = 10 if crop == "random-ten" else 1
        return [random_crop(img, size, big, r, scale, fill) for _ in range(n)]
    img = TF.resize(img, [big, big], antialias=True)
    if crop == "center":
        return [TF.center_crop(img, [size, size])]
    if crop == "ten":
        return list(TF.ten_crop(img, [size, size]))
    raise ConfigError(f"unknown crop '{crop}' (one of {', '.join(CROPS)})")


class ClassificationView(torch.utils.data.Dataset):
    """(image tensor, target) over an ImageFolderDataset or VOCClassification; optional flips.

    Flips and random crops draw from Python's `random`, which the DataLoader seeds per worker
    and per epoch from the harness's seeded generator, so a seed fixes the whole run.
    `crop` (see `crop_images`): "none" (resize; flips when `train`), "random", "center", "ten"
    or "random-ten" (the image tensor is then [10, 3, size, size]); `scale`: the random crops'
    scale jitter. "random-ten" draws from a generator seeded by (`seed`, index): the same ten
    crops of an image in every evaluation.
    """

    def __init__(
        self,
        base,
        size: int,
        normalize: dict[str, list[float]],
        train: bool,
        indices: Sequence[int] | None = None,
        crop: str = "none",
        resize_size: int | None = None,
        scale: tuple[float, float] = (1.0, 1.0),
        seed: int = 0,
    ):
        if crop not in CROPS:
            raise ConfigError(f"unknown crop '{crop}' (one of {', '.join(CROPS)})")
        self.base, self.size, self.normalize, self.train = base, size, normalize, train
        self.crop, self.resize_size, self.scale, self.seed = crop, resize_size, scale, seed
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.multilabel = hasattr(base, "labels") and hasattr(base, "ignore")
        self.classes = list(base.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, i: int) -> torch.Tensor:
        j = self.indices[i]
        if self.multilabel:
            t = torch.from_numpy(self.base.labels[j].copy())
            t[torch.from_numpy(self.base.ignore[j].copy())] = -1.0
            return t
        return torch.tensor(self.base.targets[j])

    def targets(self) -> torch.Tensor:
        return (
            torch.stack([self.target(i) for i in range(len(self))]) if len(self) else torch.zeros(0)
        )

    def image_path(self, i: int) -> Path:
        j = self.indices[i]
        return self.base.images[j] if self.multilabel else self.base.samples[j][0]

    def image_paths(self) -> list[Path]:
        return [self.image_path(i) for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from cebench.data import load_rgb

        if self.crop == "none":
            flip = self.train and random.random() < 0.5
            return to_tensor(
                load_rgb(self.image_path(i)), self.size, self.normalize, flip
            ), self.target(i)
        rng = random.Random(self.seed * 1_000_003 + i) if self.crop == "random-ten" else None
        fill = tuple(round(255 * m) for m in self.normalize["mean"])  # 0 once normalised
        crops = crop_images(
            load_rgb(self.image_path(i)),
            self.size,
            self.crop,
            self.resize_size,
            rng,
            tuple(self.scale),
            fill,
        )
        x = torch.stack(
            [
                TF.normalize(TF.to_tensor(c), self.normalize["mean"], self.normalize["std"])
                for c in crops
            ]
        )
        return (x if len(crops) == 10 else x[0]), self.target(i)


def classification_splits(
    root: Path,
    fmt: str,
    train_split: str,
    val_split: str,
    size: int,
    normalize: dict[str, list[float]],
) -> tuple[ClassificationView, ClassificationView]:
    from cebench.data import ImageFolderDataset, VOCClassification

    if fmt == "voc":
        tr, va = VOCClassification(root, train_split), VOCClassification(root, val_split)
    else:
        missing = [s for s in (train_split, val_split) if not (root / s).is_dir()]
        if missing:
            there = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise DatasetError(
                f"{root}: no split folder {' or '.join(m + '/' for m in missing)} (train_split={train_split}, "
                f"val_split={val_split}; the paper preset reads VOC07's trainval/test); this "
                f"ImageFolder root has {', '.join(there) or 'no sub-folders'}: pass e.g. "
                "--set train_split=train --set val_split=val"
            )
        tr, va = ImageFolderDataset(root / train_split), ImageFolderDataset(root / val_split)
        if tr.classes != va.classes:
            raise DatasetError(
                f"{root}: class folders differ between {train_split}/ and {val_split}/"
            )
    return ClassificationView(tr, size, normalize, True), ClassificationView(
        va, size, normalize, False
    )


def low_shot_indices(
    targets: torch.Tensor, shots: int | None, fraction: float | None, seed: int
) -> list[int]:
    """Indices of a labelled subset: `shots` examples per class, or a random `fraction` of all.

    Single-label: K random images of each class. Multi-label: for each class in turn, random images
    positive for it until it has K positives in the subset (images are shared between classes).
    """
    n = len(targets)
    if shots is None and fraction is None:
        return list(range(n))
    if shots is not None and fraction is not None:
        raise ConfigError("give either shots or label_fraction, not both")
    rng = np.random.default_rng(seed)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {fraction}")
        k = max(1, math.ceil(fraction * n))
        return sorted(rng.permutation(n)[:k].tolist())
    if shots is None or shots < 1:
        raise ConfigError(f"shots must be >= 1, got {shots}")
    chosen: set[int] = set()
    if targets.dim() == 1:
        for c in sorted(set(targets.tolist())):
            idx = np.flatnonzero(targets.numpy() == c)
            chosen.update(rng.permutation(idx)[:shots].tolist())
    else:
        pos = targets.numpy() > 0
        for c in range(pos.shape[1]):
            have = sum(pos[i, c] for i in chosen)
            for i in rng.permutation(np.flatnonzero(pos[:, c])):
                if have >= shots:
                    break
                if int(i) not in chosen:
                    chosen.add(int(i))
                    have += 1
    return sorted(chosen)


def seeded_loader(
    dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader whose order and worker RNG are fixed by `seed` (deterministic runs)."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=g,
        collate_fn=collate_fn,
        drop_last=drop_last,
        worker_init_fn=_seed_worker,
    )


def _seed_worker(_worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class ResizedImages(torch.utils.data.Dataset):
    """Images of any (image, target) dataset resized to `size` and scaled to [-1, 1], target dropped."""

    def __init__(self, base, size: int) -> None:
        self.base, self.size = base, size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_tensor(self.base[i][0], self.size, {"mean": [0.5] * 3, "std": [0.5] * 3}), 0


def calibration_batch(dataset: torch.utils.data.Dataset, n: int, seed: int) -> torch.Tensor:
    """The first `n` images of a seeded shuffle, for the data-dependent rescaling init."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    state = random.getstate()
    try:
        return torch.stack([_image_of(dataset[i]) for i in order])
    finally:
        random.setstate(state)


def _image_of(item: Any) -> torch.Tensor:
    return item[0]
