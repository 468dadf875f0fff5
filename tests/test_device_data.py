"""`data.decode: device` (cebench.pretrain.device_data) on the CPU: the same code as on a GPU,
with torchvision's decode_jpeg on CPU tensors.

Tolerance against the PIL path without draft decoding (`TrainImages(draft=False)`), for the same
crop and flip: at most 1 grey level per pixel (1/127.5 in the [-1, 1] scale), at most 0.25 levels
on average, and none where no resize is needed (both decode with libjpeg). The difference is the
resize: torch's antialiased bicubic in float, rounded once, against PIL's 8-bit integer passes.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_device_data.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.core.logger import read_jsonl
from cebench.pretrain.device_data import (
    DeviceDecoder,
    RawImages,
    collate_raw,
    crop_params,
    resize_crop_flip,
    resized_size,
)
from cebench.pretrain.train import run
from cebench.pretrain.train_data import TrainImages
from tests._train_helpers import tiny_config

LEVEL = 1 / 127.5
CPU = torch.device("cpu")
# (w, h): downscaled landscape / portrait, already at the load size, a larger photo, one smaller
# than the crop (scaled up), a square at the load size
SIZES = [(200, 150), (150, 200), (72, 90), (640, 480), (50, 40), (72, 72)]
NO_RESIZE = {2, 5}


def _photo(path, w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.uniform(0, 1, (1, 3, 6, 8))).float()
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic")[0]
    arr = img.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + rng.normal(0, 10, (h, w, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert(mode).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    return [_photo(d / f"{i}.jpg", w, h, i) for i, (w, h) in enumerate(SIZES)]


def _both(paths, keys, **kw):
    ds = TrainImages(paths, size=64, load_size=72, draft=False, **kw)
    ref = torch.stack([ds[k][0] for k in keys])
    raw = RawImages(ds)
    items = [raw[k] for k in keys]
    got, labels, skipped = DeviceDecoder(ds, CPU)(items)
    return ref, got, items, labels, skipped


@pytest.mark.parametrize("crop,flip", [("random", True), ("center", False)])
def test_device_path_gives_the_pil_pixels_for_the_same_crop_and_flip(photos, crop, flip):
    for seed in range(3):
        keys = [(i, 100 * seed + i) for i in range(len(photos))]
        ref, got, items, _, skipped = _both(photos, keys, crop=crop, flip=flip)
        assert all(it.data is not None for it in items)  # every JPEG went the device way
        assert got.shape == ref.shape == (len(photos), 3, 64, 64) and skipped == 0
        diff = (got - ref).abs()
        assert float(diff.max()) <= LEVEL + 1e-6
        assert float(diff.mean()) <= 0.25 * LEVEL
        for i in NO_RESIZE:
            assert torch.equal(got[i], ref[i]), i


def test_a_wrong_crop_or_flip_would_be_seen(photos):
    """The tolerance above is far below what a crop off by one pixel or a missed flip gives."""
    ds = TrainImages(photos, size=64, load_size=72, draft=False)
    key = (3, 7)
    ref = ds[key][0]
    img = torch.from_numpy(np.array(ds.resized(Image.open(photos[3]).convert("RGB")))).permute(
        2, 0, 1
    )
    x0, y0, flipped = crop_params(img.shape[2], img.shape[1], 64, "random", True, key[1])
    for dx, fl in ((1, flipped), (0, not flipped)):
        c = img[:, y0 : y0 + 64, x0 + dx : x0 + dx + 64].float() / 127.5 - 1
        c = c.flip(-1) if fl else c
        assert float((c - ref).abs().mean()) > 5 * LEVEL  # 6.2 to 12 levels on these photos


def test_resized_size_and_crop_params_follow_train_images():
    for w, h in [(200, 150), (150, 200), (50, 40), (72, 90), (999, 333)]:
        for load in (72, 0):
            pil = TrainImages(["x"], size=64, load_size=load).resized(Image.new("RGB", (w, h)))
            assert resized_size(w, h, load, 64) == pil.size, (w, h, load)
    ds = TrainImages(["x"], size=8, crop="random", flip=True)
    arr = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    for seed in range(20):
        x0, y0, fl = crop_params(30, 20, 8, "random", True, seed)
        c = (
            torch.from_numpy(arr[y0 : y0 + 8, x0 : x0 + 8].copy()).permute(2, 0, 1).float() / 127.5
            - 1
        )
        want = ds.crop_flip(arr, torch.Generator().manual_seed(seed))
        assert torch.equal(c.flip(-1) if fl else c, want), seed


def test_resize_crop_flip_batches_one_call_per_size(monkeypatch):
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(
        torch.nn.functional, "interpolate", lambda x, **kw: calls.append(x.shape) or real(x, **kw)
    )
    imgs = [torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8) for _ in range(5)]
    imgs += [torch.randint(0, 256, (3, 120, 90), dtype=torch.uint8) for _ in range(3)]
    out = resize_crop_flip(imgs, list(range(8)), size=32, load_size=40, crop="random", flip=True)
    assert out.shape == (8, 3, 32, 32) and float(out.min()) >= -1 and float(out.max()) <= 1
    assert sorted(c[0] for c in calls) == [3, 5]


def test_other_files_take_the_cpu_path_and_errors_name_the_file(tmp_path, photos):
    png = tmp_path / "a.png"
    Image.open(photos[0]).convert("RGB").save(png)
    grey = _photo(tmp_path / "grey.jpg", 100, 80, 9, mode="L")
    cmyk = _photo(tmp_path / "cmyk.jpg", 100, 80, 8, mode="CMYK")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[3].read_bytes()[:3000])  # the header parses, the data is cut
    paths = [photos[0], png, grey, cmyk]
    keys = [(i, 5 + i) for i in range(4)]
    ref, got, items, labels, _ = _both(paths, keys)
    assert [it.data is not None for it in items] == [True, False, False, False]
    assert torch.equal(got[1:], ref[1:])  # the CPU path's own crops
    assert labels.tolist() == [-1] * 4
    ds = TrainImages([broken, *paths], size=64, load_size=72)
    items = [RawImages(ds)[k] for k in [(0, 1), (1, 2)]]
    assert items[0].data is not None  # only the decoder finds out
    with pytest.raises(DatasetError, match="broken.jpg"):
        DeviceDecoder(ds, CPU)(items)
    ds.skip_bad_images = True
    images, _, skipped = DeviceDecoder(ds, CPU)([RawImages(ds)[k] for k in [(0, 1), (1, 2)]])
    assert skipped == 1 and torch.isfinite(images).all()


def test_labels_pass_through_and_workers_only_read_bytes(photos):
    ds = TrainImages(photos, labels=[3, 1, 4, 1, 5, 9], size=64, load_size=72)
    loader = torch.utils.data.DataLoader(
        RawImages(ds),
        batch_size=3,
        collate_fn=collate_raw,
        num_workers=1,
        sampler=[(i, i) for i in range(6)],
    )
    batches = list(loader)
    assert [it.label for b in batches for it in b] == [3, 1, 4, 1, 5, 9]
    assert all(it.data is not None and it.ready is None for b in batches for it in b)
    _, labels, _ = DeviceDecoder(ds, CPU)(batches[0])
    assert labels.tolist() == [3, 1, 4]


def test_pretrain_with_device_decoding_equals_cpu_decoding_without_resizes(tmp_path):
    """36 px JPEGs at load size 36: no resize on either path, so the same pixels, the same
    masks, the same losses bit for bit (the Trainer's loader swapped, nothing else)."""
    (tmp_path / "imgs").mkdir()
    for i in range(16):
        _photo(tmp_path / "imgs" / f"{i:02d}.jpg", 36, 36, i)
    runs = {}
    for decode in ("cpu", "device"):
        over = ["train.steps=3", "train.sample_every=0", f"data.decode={decode}"]
        runs[decode] = run(tiny_config(tmp_path / "imgs", tmp_path / decode, over))
    rows = {
        k: [(r["step"], r["loss"]) for r in read_jsonl(v / "metrics.jsonl")]
        for k, v in runs.items()
    }
    assert rows["device"] == rows["cpu"] and len(rows["cpu"]) == 3


def test_memory_bounded_chunks_give_the_same_batch(photos, monkeypatch):
    """Decoding and resizing in runs of a pixel budget (camera photos would take gigabytes at
    once) changes nothing but the number of calls."""
    from cebench.pretrain import device_data

    keys = [(i, 40 + i) for i in range(len(photos))] * 2
    _, whole, _, _, _ = _both(photos, keys)
    calls = []
    real = device_data.F.interpolate
    monkeypatch.setattr(
        device_data.F, "interpolate", lambda x, **kw: calls.append(len(x)) or real(x, **kw)
    )
    monkeypatch.setattr(device_data, "DECODE_PIXELS", 200 * 150)
    monkeypatch.setattr(device_data, "RESIZE_PIXELS", 1)
    _, chunked, items, _, _ = _both(photos, keys)
    assert torch.equal(chunked, whole)
    assert set(calls) == {1} and items[3].pixels == 640 * 480
    assert device_data._chunks([0, 1, 2, 3], [5, 5, 5, 20], 10) == [[0, 1], [2], [3]]


@pytest.mark.needs_cuda
def test_cuda_decoding_gives_the_pil_pixels_within_jpeg_decoder_tolerance(photos):
    """On a GPU, nvJPEG decodes (not libjpeg): its chroma upsampling is not libjpeg's "fancy"
    (triangular) one, which on these noisy 4:2:0 JPEGs moves pixels by up to 37 grey levels and
    2.5 on average (H200, 2026-12-04: benchmarks/gpu/2026-12-04/summary.txt). The tolerance, a
    mean of 4 levels per image, stays under what a crop off by one pixel gives (6.2 to 12 levels,
    test_a_wrong_crop_or_flip_would_be_seen) and far under a missed flip (over 57)."""
    ds = TrainImages(photos, size=64, load_size=72, draft=False)
    for seed in range(3):
        keys = [(i, 100 * seed + i) for i in range(len(photos))]
        ref = torch.stack([ds[k][0] for k in keys])
        items = [RawImages(ds)[k] for k in keys]
        got, _, skipped = DeviceDecoder(ds, torch.device("cuda"))(items)
        assert got.device.type == "cuda" and skipped == 0
        diff = (got.cpu() - ref).abs() / LEVEL
        print(
            f"seed {seed}: nvJPEG vs PIL grey levels: mean {float(diff.mean()):.3f}, "
            f"p99 {float(diff.flatten().quantile(0.99)):.2f}, max {float(diff.max()):.2f}"
        )
        per_image = diff.mean(dim=(1, 2, 3))
        assert float(per_image.max()) <= 4.0, per_image.tolist()
