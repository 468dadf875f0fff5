"""Image loading: every PIL mode becomes correct 8-bit RGB; broken files give a DatasetError naming them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.data import ImageFiles, ImageFolderDataset, list_images, load_rgb


def _rgb(path) -> np.ndarray:
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = _rgb(tmp_path / "g.png")
    assert out.shape == (8, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_palette_maps_indices_through_the_palette(tmp_path):
    idx = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([10, 20, 30, 200, 100, 0, 0, 255, 7] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    out = _rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [200, 100, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 255, 7])


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [100, 50, 0, 255]  # opaque: unchanged
    rgba[0, 1] = [100, 50, 0, 0]  # transparent: white
    rgba[1, 0] = [0, 0, 0, 128]  # half black over white: ~127
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png").astype(int)
    np.testing.assert_array_equal(out[0, 0], [100, 50, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    assert np.all(np.abs(out[1, 0] - 127) <= 1)


def test_cmyk_converts_to_rgb(tmp_path):
    cmyk = np.zeros((2, 2, 4), dtype=np.uint8)
    cmyk[0, 0] = [0, 0, 0, 0]  # white
    cmyk[0, 1] = [255, 0, 0, 0]  # cyan
    cmyk[1, 0] = [0, 0, 0, 255]  # black
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=100)
    out = _rgb(tmp_path / "c.jpg").astype(int)
    assert np.all(out[0, 0] > 240)
    assert out[0, 1, 0] < 40 and out[0, 1, 1] > 200 and out[0, 1, 2] > 200
    assert np.all(out[1, 0] < 20)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 32768]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    out = _rgb(tmp_path / "g16.png")[..., 0].astype(int)
    # clipping would turn everything above 255 into 255; scaling maps 65535 -> 255, 25700 -> 100
    np.testing.assert_array_equal(out, [[0, 100], [255, 128]])


def test_float_image_in_unit_range_is_scaled(tmp_path):
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tiff")
    out = np.asarray(load_rgb(tmp_path / "f.tiff"))[..., 0].astype(int)
    np.testing.assert_array_equal(out, [[0, 128], [255, 64]])


def test_list_images_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b/x.PNG", "a/deep/y.jpg", "c.webp", "d.bmp", "e.jpeg", "notes.txt", ".hidden.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            p.write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(
                p, format={"webp": "WEBP", "bmp": "BMP"}.get(p.suffix[1:], None) or "PNG"
            )
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a/deep/y.jpg", "b/x.PNG", "c.webp", "d.bmp", "e.jpeg"]
    ds = ImageFiles(tmp_path, transform=lambda im: im.size)
    assert len(ds) == 5 and ds[0] == (4, 4)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"empty: no images found"):
        list_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="image file not found"):
        load_rgb(tmp_path / "nope.png")


def test_truncated_and_garbage_images_name_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "ok.jpg"
    )
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DatasetError, match=r"trunc\.jpg: cannot read image"):
        load_rgb(tmp_path / "trunc.jpg")
    with pytest.raises(DatasetError, match=r"garbage\.png: cannot read image"):
        load_rgb(tmp_path / "garbage.png")


def test_imagefolder_classes_and_empty_class(tmp_path):
    for cls, n in [("cat", 2), ("dog", 3)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert [t for _, t in ds.samples] == [0, 0, 1, 1, 1]
    assert ds[4][1] == 1 and ds[4][0].mode == "RGB"
    (tmp_path / "emu").mkdir()
    with pytest.raises(DatasetError, match=r"emu: class folder holds no image"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "cat")


def test_16bit_colour_png_keeps_its_range(tmp_path):
    cv2 = pytest.importorskip("cv2")
    bgr = np.zeros((2, 2, 3), dtype=np.uint16)
    bgr[0, 0] = [65535, 257 * 100, 0]
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)  # a real 48-bit PNG
    out = _rgb(tmp_path / "c16.png")
    np.testing.assert_array_equal(out[0, 0], [0, 100, 255])
    np.testing.assert_array_equal(out[1, 1], [0, 0, 0])
