"""Training images decoded and augmented on the training device (`data.decode: device`).

    cebench pretrain --config paper-alexnet --data PHOTOS --out runs/a data.decode=device

The loader workers only read each file's bytes (and its header: size, colour mode, EXIF
orientation). The main process decodes a batch's JPEGs in one `torchvision.io.decode_jpeg` call
on the training device (nvJPEG's batched decoder on CUDA, libjpeg on the CPU), then resizes
(bicubic with antialiasing, images of one size in one call), crops and flips the whole batch as
tensor ops on the device. The crop offsets and the flip come from the same per-image generator
draws as `TrainImages.crop_flip`, so a step sees the same crops as with `data.decode: cpu`, and
resuming stays exact. Files this path does not take (PNGs and other formats, CMYK or greyscale
JPEGs, a rotated EXIF orientation, a file that fails to decode or exceeds data.max_pixels) go
through `TrainImages` itself in the worker, so errors name the file and `data.skip_bad_images`
behaves as before.

Pixels: the same as the PIL path without draft decoding (`TrainImages(draft=False)`) within a
few grey levels (libjpeg decodes identically on the CPU; the resize is torch's antialiased bicubic
in float instead of PIL's in 8-bit integers, then rounded to 8 bits): tests/test_device_data.py
states the tolerance. nvJPEG may differ from libjpeg by a level or two more. There is no DCT-scaled
(draft) decoding: each JPEG is decoded at full size, which is what a GPU is fast at.
torchvision 0.29 marks its image decoders deprecated (a DeprecationWarning, hidden by default) in
favour of TorchCodec; they still work, and the pinned torchvision keeps them.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from cebench.data.images import max_pixels_limit
from cebench.pretrain.train_data import TrainImages

_EXIF_ORIENTATION = 0x0112
# Memory bounds: JPEGs decoded per decode_jpeg call (uint8, 3 bytes a pixel: 192 MB) and images
# resized per interpolate call (float, 12 bytes a pixel: 192 MB). A batch of 64 camera photos
# (12 Mpx) would otherwise take 2.3 GB decoded and 9.2 GB as floats at once.
DECODE_PIXELS = 64_000_000
RESIZE_PIXELS = 16_000_000


@dataclass
class RawItem:
    """One image as the workers hand it over: its JPEG bytes (to decode on the device), or the
    crop `TrainImages` already made (every file the device path does not take)."""

    index: int  # the image actually used (after skipping bad files)
    aug_seed: int
    label: int
    skipped: int
    # the file's bytes: `bytes`, not a tensor, since a worker hands a tensor over through shared
    # memory and a file descriptor each, 5x slower for a batch of 64 small files than pickling
    data: bytes | None = None
    pixels: int = 0  # w x h from the JPEG's header
    ready: torch.Tensor | None = None  # float [3, size, size] in [-1, 1]


class RawImages(torch.utils.data.Dataset):
    """`TrainImages`' keys -> `RawItem`: bytes for plain RGB JPEGs, else the CPU path's crop."""

    def __init__(self, images: TrainImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def _jpeg_bytes(self, index: int) -> tuple[bytes, int] | None:
        path = self.images.paths[index]
        try:
            blob = Path(path).read_bytes()
            with Image.open(io.BytesIO(blob)) as im:  # the header only: nothing is decoded
                w, h = im.size
                if im.format != "JPEG" or im.mode != "RGB" or w * h > max_pixels_limit():
                    return None
                if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    return None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None  # TrainImages reads it again and names the problem
        return blob, w * h

    def __getitem__(self, key: tuple[int, int]) -> RawItem:
        index, aug_seed = key
        label = self.images.labels[index] if self.images.labels is not None else -1
        jpeg = self._jpeg_bytes(index)
        if jpeg is not None:
            return RawItem(index, aug_seed, label, 0, data=jpeg[0], pixels=jpeg[1])
        return cpu_item(self.images, key)


def jpeg_tensor(blob: bytes) -> torch.Tensor:
    """A file's bytes as the uint8 tensor `decode_jpeg` takes (a copy: bytes are read-only)."""
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def cpu_item(images: TrainImages, key: tuple[int, int]) -> RawItem:
    """The item made by the CPU path (`TrainImages`): its errors name the file, it skips bad
    files under data.skip_bad_images."""
    image, label, skipped = images[key]
    return RawItem(key[0], key[1], label, skipped, ready=image)


def collate_raw(items: list[RawItem]) -> list[RawItem]:
    """The batch as the list of its items (decoded in the main process)."""
    return items


def resized_size(w: int, h: int, load_size: int, size: int) -> tuple[int, int]:
    """(w, h) after `TrainImages.resized`: shorter side load_size, then at least the input size
    (`resize_shorter`'s rounding)."""

    def shorter(w: int, h: int, side: int) -> tuple[int, int]:
        if min(w, h) == side:
            return w, h
        scale = side / min(w, h)
        return max(side, round(w * scale)), max(side, round(h * scale))

    if load_size:
        w, h = shorter(w, h, load_size)
    if min(w, h) < size:
        w, h = shorter(w, h, size)
    return w, h


def crop_params(
    w: int, h: int, size: int, crop: str, flip: bool, aug_seed: int
) -> tuple[int, int, bool]:
    """(x0, y0, flipped) of `TrainImages.crop_flip` on a (w, h) image: the same draws, in order."""
    gen = torch.Generator().manual_seed(aug_seed)
    if crop == "random":
        x0 = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        y0 = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    else:
        x0, y0 = (w - size) // 2, (h - size) // 2
    flipped = flip and bool(torch.rand(1, generator=gen) < 0.5)
    return x0, y0, flipped


def _chunks(idx: list[int], pixels: list[int], budget: int) -> list[list[int]]:
    """`idx` in runs of at most `budget` pixels in all (at least one image each)."""
    out: list[list[int]] = []
    total = budget
    for i in idx:
        if total + pixels[i] > budget:
            out.append([])
            total = 0
        out[-1].append(i)
        total += pixels[i]
    return out


def resize_crop_flip(
    decoded: list[torch.Tensor],
    seeds: list[int],
    *,
    size: int,
    load_size: int,
    crop: str,
    flip: bool,
) -> torch.Tensor:
    """Decoded uint8 [3, H, W] images (one device) -> float [B, 3, size, size] in [-1, 1]:
    `TrainImages`' resize -> crop -> [-1, 1] -> flip, batched: one antialiased bicubic resize per
    distinct (source, target) size (in runs of at most RESIZE_PIXELS), one gather per size for
    the crops, one flip."""
    device = decoded[0].device
    n = len(decoded)
    out = torch.empty(n, 3, size, size, device=device)
    groups: dict[tuple[int, int, int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(decoded):
        h, w = img.shape[-2:]
        rw, rh = resized_size(w, h, load_size, size)
        groups[(h, w, rh, rw)].append(i)
    pixels = [img.shape[-1] * img.shape[-2] for img in decoded]
    flips = torch.zeros(n, dtype=torch.bool)
    r = torch.arange(size, device=device)
    for (h, w, rh, rw), members in groups.items():
        for idx in _chunks(members, pixels, RESIZE_PIXELS):
            x = torch.stack([decoded[i] for i in idx]).float()
            if (rh, rw) != (h, w):
                x = F.interpolate(
                    x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False
                )
                x = x.round_().clamp_(0, 255)  # PIL's resize gives 8-bit pixels
            params = [crop_params(rw, rh, size, crop, flip, seeds[i]) for i in idx]
            off = torch.tensor([[p[1], p[0]] for p in params], device=device)  # (y0, x0)
            ys = (off[:, 0:1] + r).view(-1, 1, size, 1)
            xs = (off[:, 1:2] + r).view(-1, 1, 1, size)
            g = torch.arange(len(idx), device=device).view(-1, 1, 1, 1)
            ch = torch.arange(3, device=device).view(1, 3, 1, 1)
            out[torch.tensor(idx, device=device)] = x[g, ch, ys, xs]
            flips[idx] = torch.tensor([p[2] for p in params])
    out = out.div_(127.5).sub_(1.0)
    flips = flips.to(device).view(-1, 1, 1, 1)
    return torch.where(flips, out.flip(-1), out)


class DeviceDecoder:
    """A batch of `RawItem`s -> (images on `device`, labels, n_skipped), as `collate` gives."""

    def __init__(self, images: TrainImages, device: torch.device) -> None:
        self.images, self.device = images, device

    def _decode(self, items: list[RawItem]) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode, decode_jpeg

        blobs = [jpeg_tensor(it.data) for it in items if it.data is not None]
        try:
            return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad file fails the batch: find it, decode the rest
            out: list[torch.Tensor | None] = []
            for b in blobs:
                try:
                    out.append(decode_jpeg(b, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out

    def __call__(self, items: list[RawItem]) -> tuple[torch.Tensor, torch.Tensor, int]:
        d = self.images
        images = torch.empty(len(items), 3, d.size, d.size, device=self.device)
        jpeg = [i for i, it in enumerate(items) if it.data is not None]
        pixels = [it.pixels for it in items]
        for chunk in _chunks(jpeg, pixels, DECODE_PIXELS) if jpeg else []:
            decoded = self._decode([items[i] for i in chunk])
            good = [i for i, img in zip(chunk, decoded, strict=True) if img is not None]
            for i, img in zip(chunk, decoded, strict=True):
                if img is None:  # undecodable: the CPU path names it (or skips it)
                    items[i] = cpu_item(d, (items[i].index, items[i].aug_seed))
            if good:
                images[torch.tensor(good, device=self.device)] = resize_crop_flip(
                    [img for img in decoded if img is not None],
                    [items[i].aug_seed for i in good],
                    size=d.size,
                    load_size=d.load_size,
                    crop=d.crop,
                    flip=d.flip,
                )
        for i, it in enumerate(items):
            if it.ready is not None:
                images[i] = it.ready.to(self.device, non_blocking=True)
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        return images, labels, sum(it.skipped for it in items)


class DecodingLoader:
    """A DataLoader of `RawItem` batches whose iterator yields decoded batches (what the
    Trainer's loop and `cebench speed` take from the CPU path's loader)."""

    def __init__(self, loader: torch.utils.data.DataLoader, decoder: DeviceDecoder) -> None:
        self.loader, self.decoder = loader, decoder

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> _DecodingIter:
        return _DecodingIter(iter(self.loader), self.decoder)


class _DecodingIter:
    def __init__(self, it: Any, decoder: DeviceDecoder) -> None:
        self.it, self.decoder = it, decoder

    def __iter__(self) -> _DecodingIter:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.decoder(next(self.it))

    def _shutdown_workers(self) -> None:  # cebench.pretrain.trainer.stop_workers
        shutdown = getattr(self.it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def device_loader(
    images: TrainImages, device: torch.device, **loader_kwargs: Any
) -> DecodingLoader:
    """The training loader for `data.decode: device`: workers read bytes, `device` decodes."""
    raw = torch.utils.data.DataLoader(RawImages(images), collate_fn=collate_raw, **loader_kwargs)
    return DecodingLoader(raw, DeviceDecoder(images, device))
