"""Real photo folders (issue 15): JPEG draft decoding and `cebench data prepare`'s resized copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _train_helpers import write_images
from PIL import Image

from cebench.core.errors import ConfigError
from cebench.data import list_images, load_rgb
from cebench.data.images import draft_scale
from cebench.data.prepare import MANIFEST, prepare
from cebench.pretrain.train_data import StepBatchSampler, TrainImages, collate, resize_shorter


def _photo(path, w, h, seed=0, fmt=None):
    """A smooth colour field with a little noise, like a photo in compressibility."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.uniform(0, 1, (1, 3, 4, 5))).float()
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    arr = img[0].permute(1, 2, 0).numpy() * 255 + rng.normal(0, 4, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, format=fmt, quality=92)
    return path


def test_draft_scale_keeps_twice_the_target():
    # 4000x3000 for a 72 px load size: 3000/8 = 375 >= 2 x 72
    assert draft_scale((4000, 3000), 72) == 8
    # 200 px: 375 < 400, 3000/4 = 750 >= 400
    assert draft_scale((4000, 3000), 200) == 4
    # Paris StreetView 936x537 for 160 px: 537/2 = 269 < 320: no reduction
    assert draft_scale((936, 537), 160) == 1
    assert draft_scale((936, 537), 128) == 2  # 269 >= 256
    assert draft_scale((4000, 3000), 0) == 1


def test_load_rgb_drafts_large_jpegs_only(tmp_path):
    jpg = _photo(tmp_path / "a.jpg", 640, 480)
    png = _photo(tmp_path / "a.png", 640, 480)
    assert load_rgb(jpg).size == (640, 480)
    # 480/8 = 60 < 2 x 40; 480/4 = 120 >= 80
    drafted = load_rgb(jpg, draft_side=40)
    assert drafted.size == (160, 120)
    # what the training transform does next: both resized to a 40 px shorter side
    full = np.asarray(resize_shorter(load_rgb(jpg), 40), dtype=np.float64)
    small = np.asarray(resize_shorter(drafted, 40), dtype=np.float64)
    assert full.shape == small.shape
    assert np.abs(full - small).mean() < 2.0  # of 255
    # PNGs, and JPEGs too small to reduce, decode exactly as without a target
    assert np.array_equal(np.asarray(load_rgb(png, draft_side=40)), np.asarray(load_rgb(png)))
    assert np.array_equal(np.asarray(load_rgb(jpg, draft_side=200)), np.asarray(load_rgb(jpg)))


def _batches(folder, steps=3, batch=4, load=40, draft=True):
    ds = TrainImages(list_images(folder), size=32, load_size=load, draft=draft)
    sampler = StepBatchSampler(len(ds), batch, seed=3, start_step=0, total_steps=steps)
    return [collate([ds[k] for k in keys])[0] for keys in sampler]


def test_train_images_draft_is_deterministic_and_off_without_reduction(tmp_path):
    for i in range(4):
        _photo(tmp_path / "big" / f"{i}.jpg", 400, 300, seed=i)
    a, b = _batches(tmp_path / "big"), _batches(tmp_path / "big")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # a function of (seed, step)
    full = _batches(tmp_path / "big", draft=False)
    assert not all(torch.equal(x, y) for x, y in zip(a, full, strict=True))  # 300/2 = 150 >= 80
    assert max((x - y).abs().mean().item() for x, y in zip(a, full, strict=True)) < 0.03
    write_images(tmp_path / "small", n=4, size=36)  # PNGs: nothing to draft
    for x, y in zip(
        _batches(tmp_path / "small"), _batches(tmp_path / "small", draft=False), strict=True
    ):
        assert torch.equal(x, y)


@pytest.fixture()
def photos(tmp_path):
    src = tmp_path / "src"
    write_images(src / "small", n=3, size=36)  # already <= 40: copied byte for byte
    for i in range(3):
        _photo(src / "big" / f"p{i}.jpg", 200, 150, seed=i)
    _photo(src / "big" / "wide.png", 240, 100, seed=9)
    (src / "big" / ".hidden.jpg").write_bytes(b"skipped")
    (src / "notes.txt").write_text("not an image")
    return src


def test_prepare_same_files_same_batches(photos, tmp_path):
    dst = tmp_path / "dst"
    info = prepare(photos, dst, 40)
    rel = [p.relative_to(photos) for p in list_images(photos)]
    assert [p.relative_to(dst) for p in list_images(dst)] == rel
    for r in rel:
        w, h = Image.open(dst / r).size
        src_w, src_h = Image.open(photos / r).size
        if min(src_w, src_h) <= 40:
            assert (dst / r).read_bytes() == (photos / r).read_bytes()
        else:  # shorter side 40, aspect kept (round(240 * 40 / 100) = 96)
            assert min(w, h) == 40 and abs(w / h - src_w / src_h) < 0.03
    assert Image.open(dst / "big" / "wide.png").size == (96, 40)
    manifest = json.loads((dst / MANIFEST).read_text())
    assert manifest["size"] == 40 and manifest["count"] == len(rel) == info["written"] == 7
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    # training on the copy: the same batches, up to the JPEG re-encoding of the resized images
    for a, b in zip(_batches(photos), _batches(dst), strict=True):
        assert (a - b).abs().mean().item() < 0.02
    # exactly, where the images already fitted
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            _batches(photos / "small", batch=2), _batches(dst / "small", batch=2), strict=True
        )
    )


def test_prepare_resumes_and_updates(photos, tmp_path, monkeypatch):
    import cebench.data.prepare as prep

    dst = tmp_path / "dst"
    real, calls = prep.prepare_one, []

    def dies_after_two(src, out, size):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(src)
        return real(src, out, size)

    monkeypatch.setattr(prep, "prepare_one", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare(photos, dst, 40)
    assert not dst.exists() and (tmp_path / ".dst.partial" / MANIFEST).is_file()
    monkeypatch.setattr(prep, "prepare_one", real)
    info = prepare(photos, dst, 40)
    assert (info["written"], info["kept"], info["count"]) == (5, 2, 7)
    assert not (tmp_path / ".dst.partial").exists()
    # up to date: nothing written; a changed, a new and a removed source file are followed
    assert prepare(photos, dst, 40)["written"] == 0
    _photo(photos / "big" / "p0.jpg", 300, 150, seed=5)
    _photo(photos / "big" / "new.jpg", 100, 100, seed=6)
    (photos / "small" / "img_000.png").unlink()
    info = prepare(photos, dst, 40)
    assert info["written"] == 2 and Image.open(dst / "big" / "p0.jpg").size == (80, 40)
    assert [p.relative_to(dst) for p in list_images(dst)] == [
        p.relative_to(photos) for p in list_images(photos)
    ]


def test_prepare_refuses_a_foreign_or_different_out(photos, tmp_path):
    other = write_images(tmp_path / "other", n=2, size=36)
    with pytest.raises(ConfigError, match="--force"):
        prepare(photos, other, 40)
    prepare(photos, tmp_path / "dst", 40)
    with pytest.raises(ConfigError, match="another source or size"):
        prepare(photos, tmp_path / "dst", 48)
    info = prepare(photos, tmp_path / "dst", 48, force=True)
    assert info["size"] == 48 and Image.open(tmp_path / "dst" / "big" / "wide.png").size[1] == 48
    with pytest.raises(ConfigError, match="lies inside the input SRC"):
        prepare(photos, photos / "copy", 40)


def test_prepare_force_never_deletes_what_it_did_not_write(photos, tmp_path):
    # a foreign --out, and the parent of SRC: --force refuses both and every file stays
    other = write_images(tmp_path / "other", n=2, size=36)
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(ConfigError, match="not written by cebench data prepare"):
        prepare(photos, other, 40, force=True)
    assert sorted(p.name for p in other.iterdir()) == before
    with pytest.raises(ConfigError, match="contains the input SRC"):
        prepare(photos, photos.parent, 40, force=True)
    assert list_images(photos)
    # a file the user added to a prepared --out survives a rerun and blocks --force
    dst = tmp_path / "dst"
    prepare(photos, dst, 40)
    (dst / "notes.txt").write_text("mine\n")
    prepare(photos, dst, 40)
    with pytest.raises(ConfigError, match=r"not written by .*\(notes.txt\)"):
        prepare(photos, dst, 48, force=True)
    assert (dst / "notes.txt").read_text() == "mine\n"


def test_prepare_stopped_by_sigterm_keeps_its_progress(photos, tmp_path, monkeypatch, capsys):
    # SIGTERM used to kill the process before the manifest was saved: the rerun redid everything
    import os
    import signal

    import cebench.data.prepare as prep
    from cebench.cli import main as cebench

    dst = tmp_path / "dst"
    real, calls = prep.prepare_one, []

    def terminated_after_three(src, out, size):
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(src)
        return real(src, out, size)

    monkeypatch.setattr(prep, "prepare_one", terminated_after_three)
    argv = ["data", "prepare", str(photos), "--size", "40", "--out", str(dst)]
    assert cebench(argv) == 143
    assert "stopped by signal 15" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    saved = json.loads((tmp_path / ".dst.partial" / MANIFEST).read_text())
    assert len(saved["files"]) == 3
    monkeypatch.setattr(prep, "prepare_one", real)
    info = prepare(photos, dst, 40)
    assert (info["written"], info["kept"], info["count"]) == (4, 3, 7)


def test_a_second_prepare_on_the_same_out_names_the_first(photos, tmp_path):
    from cebench.core.lock import FolderLock

    dst = tmp_path / "dst"
    with FolderLock(tmp_path, "cebench data prepare", lock_name=".dst.cebench.lock"):
        with pytest.raises(ConfigError, match=r"--out .*dst is in use by another cebench process"):
            prepare(photos, dst, 40)
    assert not dst.exists() and not (tmp_path / ".dst.partial").exists()
    assert prepare(photos, dst, 40)["count"] == 7
