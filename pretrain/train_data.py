"""Training images for pretraining: deterministic order and augmentation, resumable at any step.

    ds = TrainImages(paths, size=64, load_size=72)
    sampler = StepBatchSampler(len(ds), global_batch=64, seed=0, start_step=120, total_steps=1000)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, persistent_workers=True)

The batch of step s is a pure function of (seed, s): epoch = s // steps_per_epoch, the epoch's
permutation comes from a generator seeded with (seed, epoch), and each image's random crop and flip
from a generator seeded with (seed, epoch, index). So resuming at step s continues with exactly the
batch an uninterrupted run would have used, worker processes never hold state that matters, and
N processes that each take their slice of the global batch see exactly what one process sees.
The last incomplete global batch of an epoch is dropped (every step has the same batch size).

With a load size, large JPEGs are decoded at reduced scale (`load_rgb(draft_side=...)`, libjpeg's
DCT scaling: a 4000x3000 photo for load size 72 decodes as 500x375), so a folder of camera photos
does not make decoding the bottleneck; `draft=False` decodes at full size. PNGs cannot be drafted:
`cebench data prepare` writes a resized copy once (cebench.data.prepare).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.data import load_rgb
from cebench.data.images import cached, cached_read, file_key, max_pixels_limit

_MIX = 1_000_003  # odd multiplier for combining seeds


def _seed(*parts: int) -> int:
    s = 0
    for p in parts:
        s = (s * _MIX + int(p)) % (2**62)
    return s


def resize_shorter(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == side:
        return img
    scale = side / min(w, h)
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BICUBIC)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float [3,H,W] in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return arr.float().div_(127.5).sub_(1.0)


class TrainImages(torch.utils.data.Dataset):
    """Images (optionally labelled) with resize -> crop -> flip -> [-1, 1].

    Items are looked up with keys `(index, aug_seed)` (from `StepBatchSampler`) and return
    `(image, label, n_skipped)`; label is -1 for unlabelled data, n_skipped counts undecodable
    files replaced by the next image when `skip_bad_images` is set.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None = None,
        *,
        size: int,
        load_size: int = 0,
        crop: str = "random",
        flip: bool = True,
        skip_bad_images: bool = False,
        draft: bool = True,
    ) -> None:
        if not paths:
            raise DatasetError("no training images")
        self.paths = list(paths)  # str or Path as given: a Path per file of 1.28M costs seconds
        self.labels = list(labels) if labels is not None else None
        self.size, self.load_size, self.crop, self.flip = size, load_size, crop, flip
        self.skip_bad_images = skip_bad_images
        # what the image is resized to before cropping (no draft without a load size: the crop
        # then comes from the full-resolution image)
        self.draft_side = max(load_size, size) if (draft and load_size) else 0

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> tuple[Image.Image, int, int]:
        skipped = 0
        for attempt in range(len(self.paths)):
            j = (index + attempt) % len(self.paths)
            try:
                # not cached: `_pixels` keeps the resized pixels, all a later read needs
                img = load_rgb(self.paths[j], draft_side=self.draft_side, cache=False)
                return img, j, skipped
            except DatasetError:
                if not self.skip_bad_images:
                    raise
                skipped += 1
        raise DatasetError("none of the training images can be read")

    def resized(self, img: Image.Image) -> Image.Image:
        """The image the crop is taken from: shorter side load_size, at least the input size."""
        if self.load_size:
            img = resize_shorter(img, self.load_size)
        if min(img.size) < self.size:  # too small to crop: scale up to the input size
            img = resize_shorter(img, self.size)
        return img

    def transform(self, img: Image.Image, gen: torch.Generator) -> torch.Tensor:
        """resize -> crop -> [-1, 1] -> flip of a loaded image (`__getitem__` does the same on
        the cached resized pixels)."""
        return self.crop_flip(np.asarray(self.resized(img), dtype=np.uint8), gen)

    def crop_flip(self, arr: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        """uint8 [H, W, 3] -> the random (or centre) crop as float [3, size, size] in [-1, 1],
        flipped with probability 1/2: two draws from `gen`, in this order."""
        h, w = arr.shape[:2]
        if self.crop == "random":
            x0 = int(torch.randint(0, w - self.size + 1, (1,), generator=gen))
            y0 = int(torch.randint(0, h - self.size + 1, (1,), generator=gen))
        else:
            x0, y0 = (w - self.size) // 2, (h - self.size) // 2
        crop = torch.from_numpy(arr[y0 : y0 + self.size, x0 : x0 + self.size].copy())
        t = crop.permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        if self.flip and bool(torch.rand(1, generator=gen) < 0.5):
            t = t.flip(-1)
        return t

    def _pixels_key(self, j: int) -> tuple | None:
        # the pixel limit too: an image read under one limit is not served under a lower one
        what = ("train-resized", self.draft_side, self.load_size, self.size, max_pixels_limit())
        return file_key(self.paths[j], what)

    def _pixels(self, j: int, img: Image.Image) -> np.ndarray:
        """The resized uint8 pixels [H, W, 3] of image `j` (loaded as `img`). They are kept in the
        per-process cache of decoded files (`cebench.data.images`): the suite reads its small
        images in every epoch, and the resize costs as much as the decoding."""
        key = self._pixels_key(j)

        def read() -> np.ndarray:
            arr = np.asarray(self.resized(img), dtype=np.uint8)
            arr.setflags(write=False)  # shared by every later read of the file
            return arr

        return read() if key is None else cached_read(key, read, lambda a: a.nbytes)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, aug_seed = key
        key_j = self._pixels_key(index)
        arr = cached(key_j) if key_j is not None else None
        j, skipped = index, 0
        if arr is None:  # first read of this file (or no cache): decode, resize, keep
            img, j, skipped = self._load(index)
            arr = self._pixels(j, img)
        gen = torch.Generator().manual_seed(aug_seed)
        label = self.labels[j] if self.labels is not None else -1
        return self.crop_flip(arr, gen), label, skipped


def collate(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([it[1] for it in items], dtype=torch.long)
    return images, labels, sum(it[2] for it in items)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this process's batch keys for steps start_step .. total_steps-1 (see module doc)."""

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < global_batch:
            raise DatasetError(
                f"the training set has {n} images, fewer than the global batch size {global_batch}; "
                "lower train.batch_size or add images"
            )
        if global_batch % world_size:
            raise DatasetError(
                f"train.batch_size={global_batch} is not divisible by {world_size} processes"
            )
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.steps_per_epoch = n // global_batch
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of `step`."""
        return divmod(step, self.steps_per_epoch)

    def keys(self, step: int) -> list[tuple[int, int]]:
        epoch, pos = self.position(step)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(_seed(self.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen), epoch
        lo = pos * self.global_batch + self.rank * self.local_batch
        idx = self._perm[lo : lo + self.local_batch].tolist()
        return [(i, _seed(self.seed, epoch, i, 7)) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def dataset_mean(
    paths: Sequence[Path], samples: int, load_size: int = 0, skip_bad_images: bool = False
) -> list[float]:
    """Mean RGB in [0, 1] over up to `samples` images spread evenly over `paths`."""
    picks = np.linspace(0, len(paths) - 1, num=min(samples, len(paths))).round().astype(int)
    total, count = np.zeros(3), 0
    for i in sorted(set(picks.tolist())):
        try:
            img = load_rgb(paths[i], draft_side=load_size)
        except DatasetError:
            if not skip_bad_images:
                raise
            continue
        if load_size:
            img = resize_shorter(img, load_size)
        total += np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0) / 255.0
        count += 1
    if count == 0:
        raise DatasetError("none of the sampled training images can be read")
    return [round(float(v), 6) for v in total / count]
