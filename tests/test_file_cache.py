"""The per-process cache of decoded files (cebench.data.images: load_rgb, VOC segmentation masks)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cebench.core.errors import ConfigError, DatasetError
from cebench.data import images as I
from cebench.data.voc import load_segmentation_mask


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv("CEBENCH_IMAGE_CACHE_MB", raising=False)
    I.clear_file_cache()
    yield
    I.clear_file_cache()


def _write(path, seed, size=(40, 30), fmt="PNG"):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, fmt)
    return arr


def _count_decodes(monkeypatch):
    calls = []
    real = I._decode

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(I, "_decode", counting)
    return calls


def test_second_load_is_a_copy_of_the_first_decode(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    arr = _write(p, 0)
    calls = _count_decodes(monkeypatch)
    a = I.load_rgb(p)
    a.paste((0, 0, 0), (0, 0, 40, 30))  # the caller may change what it got
    b = I.load_rgb(p)
    assert len(calls) == 1  # decoded once
    assert np.array_equal(np.asarray(b), arr)  # the cached pixels were not touched
    assert b is not I.load_rgb(p)


def test_jpeg_draft_side_is_part_of_the_key(tmp_path, monkeypatch):
    p = tmp_path / "big.jpg"
    _write(p, 1, size=(400, 300), fmt="JPEG")
    calls = _count_decodes(monkeypatch)
    full, small = I.load_rgb(p), I.load_rgb(p, draft_side=40)
    assert full.size == (400, 300) and small.size == (200, 150)
    assert I.load_rgb(p, draft_side=40).size == (200, 150) and len(calls) == 2
    I.clear_file_cache()
    assert np.array_equal(np.asarray(I.load_rgb(p, draft_side=40)), np.asarray(small))


def test_a_replaced_file_is_read_again(tmp_path):
    p = tmp_path / "a.png"
    _write(p, 0)
    I.load_rgb(p)
    new = tmp_path / "new.png"
    arr = _write(new, 5)
    os.replace(new, p)  # same path, another inode (and here another size and time)
    assert np.array_equal(np.asarray(I.load_rgb(p)), arr)


def test_a_file_rewritten_in_place_with_its_old_size_and_mtime_is_read_again(tmp_path):
    p = tmp_path / "a.bmp"  # BMP: the same size in bytes for any pixels
    _write(p, 0, fmt="BMP")
    st = os.stat(p)
    I.load_rgb(p)
    arr = _write(p, 5, fmt="BMP")  # in place: same inode
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -t / tar leave it
    new = os.stat(p)
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert np.array_equal(np.asarray(I.load_rgb(p)), arr)


def test_off_budget_and_pixel_limit(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    _write(p, 0)
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "0")
    calls = _count_decodes(monkeypatch)
    I.load_rgb(p), I.load_rgb(p)
    assert len(calls) == 2 and not I._CACHE
    # a budget smaller than the image: decoded every time, nothing kept
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", str(1000 / 2**20))
    I.load_rgb(p), I.load_rgb(p)
    assert len(calls) == 4 and not I._CACHE
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "1")
    I.load_rgb(p)
    # a pixel limit lowered after caching still refuses the image
    with pytest.raises(DatasetError, match="over the limit"):
        I.load_rgb(p, max_pixels=100)
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "many")
    with pytest.raises(ConfigError, match="CEBENCH_IMAGE_CACHE_MB"):
        I.load_rgb(p)


def test_missing_file_and_broken_file_are_never_cached(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        I.load_rgb(tmp_path / "none.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    for _ in range(2):
        with pytest.raises(DatasetError, match="cannot read image"):
            I.load_rgb(bad)
    assert not I._CACHE


def test_segmentation_masks_are_cached_as_copies(tmp_path, monkeypatch):
    p = tmp_path / "m.png"
    m = np.zeros((6, 8), dtype=np.uint8)
    m[1:3, 2:5], m[4, :] = 2, 255
    Image.fromarray(m, mode="L").save(p)
    a = load_segmentation_mask(p, 3)
    a[:] = 7
    b = load_segmentation_mask(p, 3)
    assert b.dtype == np.int64 and np.array_equal(b, m.astype(np.int64))
    assert len(I._CACHE) == 1
    with pytest.raises(DatasetError, match="outside the class range"):
        load_segmentation_mask(p, 1)  # another class count is another key: checked again


def test_train_images_from_cached_pixels_equal_the_stock_transform(tmp_path, monkeypatch):
    from cebench.pretrain.train_data import TrainImages, resize_shorter

    paths = []
    for i, size in enumerate([(40, 30), (20, 26), (64, 48)]):
        paths.append(tmp_path / f"{i}.jpg")
        _write(paths[-1], i, size=size, fmt="JPEG")
    ds = TrainImages(paths, size=24, load_size=28)
    calls = _count_decodes(monkeypatch)
    resizes = []
    stock_resized = ds.resized
    ds.resized = lambda img: resizes.append(img.size) or stock_resized(img)
    for _rep in range(2):  # second round: from the cache
        for i in range(3):
            for seed in (1, 2, 3):
                got, label, skipped = ds[(i, seed)]
                # the stock path: decode, resize, PIL crop, to [-1, 1], flip (same draws)
                import torch

                img = resize_shorter(I._decode(paths[i], None, ds.draft_side)[1], 28)
                if min(img.size) < 24:
                    img = resize_shorter(img, 24)
                gen = torch.Generator().manual_seed(seed)
                x0 = int(torch.randint(0, img.size[0] - 24 + 1, (1,), generator=gen))
                y0 = int(torch.randint(0, img.size[1] - 24 + 1, (1,), generator=gen))
                arr = np.asarray(img.crop((x0, y0, x0 + 24, y0 + 24)), dtype=np.uint8).copy()
                want = torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)
                if bool(torch.rand(1, generator=gen) < 0.5):
                    want = want.flip(-1)
                assert torch.equal(got, want) and label == -1 and skipped == 0
    # 3 files decoded once by the dataset (the rest are this test's own stock decodes)
    assert len(calls) == 3 + 2 * 9
    assert len(resizes) == 3  # and resized once each
    # only the resized pixels are kept (a cached decoded file would be a second copy)
    assert len(I._CACHE) == 3 and all(k[0] == "train-resized" for k in I._CACHE)


def test_train_images_cache_follows_the_pixel_limit_and_a_zero_budget(tmp_path, monkeypatch):
    """Resized pixels cached under one pixel limit are not served under a lower one (the file is
    read again and refused); a budget set to 0 later bypasses what was cached, masks included."""
    from cebench.pretrain.train_data import TrainImages

    p = tmp_path / "a.png"
    _write(p, 0, size=(40, 30))
    ds = TrainImages([p], size=24, load_size=28)
    calls = _count_decodes(monkeypatch)
    ds[(0, 1)], ds[(0, 2)]
    assert len(calls) == 1
    old = I.set_max_pixels(100)
    try:
        with pytest.raises(DatasetError, match="over the limit"):
            ds[(0, 1)]
    finally:
        I.set_max_pixels(old)
    ds[(0, 3)]
    assert len(calls) == 2  # the first key serves again under the first limit
    m = tmp_path / "m.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="L").save(m)
    load_segmentation_mask(m, 2)
    monkeypatch.setenv("CEBENCH_IMAGE_CACHE_MB", "0")
    ds[(0, 1)]
    assert len(calls) == 3
    read = []
    import cebench.data.voc as V

    real = V._read_mask
    monkeypatch.setattr(V, "_read_mask", lambda *a: read.append(a) or real(*a))
    load_segmentation_mask(m, 2)
    assert len(read) == 1
