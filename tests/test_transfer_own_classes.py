"""A user's own VOC set (its own classes, its own image size) through `transfer detect` and
`transfer segment` with the small preset: the class names come from classes.txt or from the
annotations, and the metrics file and the printed table give per-class AP / IoU under them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cebench.cli import main as cli_main
from cebench.data.check import check
from cebench.data.voc import VOC_CLASSES, read_classes

FRUIT = ("pear", "apple", "plum")  # not in sorted order: sorted, they are apple, pear, plum


def user_voc(root: Path, classes=FRUIT, n=12, w=80, h=60, seed=0, classes_txt=False) -> Path:
    """A VOC root made as a user would: rectangles of a colour per class, boxes, palette masks."""
    rng = np.random.default_rng(seed)
    for d in (
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    colours = [(220, 40, 40), (40, 200, 40), (60, 60, 230), (200, 200, 40)]
    ids = []
    for i in range(n):
        img = np.full((h, w, 3), 128, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        objs = []
        for _ in range(2):
            c = int(rng.integers(len(classes)))
            bw, bh = int(rng.integers(14, 30)), int(rng.integers(12, 24))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y0 : y0 + bh, x0 : x0 + bw] = colours[c]
            mask[y0 : y0 + bh, x0 : x0 + bw] = c + 1
            objs.append((classes[c], x0 + 1, y0 + 1, x0 + bw, y0 + bh))
        iid = f"img{i:03d}"
        ids.append(iid)
        Image.fromarray(img).save(root / "JPEGImages" / f"{iid}.jpg", quality=95)
        m = Image.fromarray(mask, mode="P")
        m.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
        m.save(root / "SegmentationClass" / f"{iid}.png")
        xml = "".join(
            f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
            f"<xmax>{x}</xmax><ymax>{y}</ymax></bndbox></object>"
            for c, a, b, x, y in objs
        )
        (root / "Annotations" / f"{iid}.xml").write_text(
            f"<annotation><filename>{iid}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{xml}</annotation>"
        )
    half = n // 2
    for task in ("Main", "Segmentation"):
        (root / "ImageSets" / task / "train.txt").write_text("\n".join(ids[:half]) + "\n")
        (root / "ImageSets" / task / "val.txt").write_text("\n".join(ids[half:]) + "\n")
        (root / "ImageSets" / task / "trainval.txt").write_text("\n".join(ids) + "\n")
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


@pytest.fixture(scope="module")
def fruit(tmp_path_factory) -> Path:
    """3 classes, 80x60 photos, two boxes each, palette masks; no classes.txt."""
    return user_voc(tmp_path_factory.mktemp("own") / "fruit")


def test_classes_come_from_classes_txt_or_the_annotations(fruit, tmp_path):
    assert read_classes(fruit) == ["apple", "pear", "plum"]  # found in Annotations/, sorted
    vocnames = user_voc(tmp_path / "v", classes=("cat", "dog"), n=4)
    assert read_classes(vocnames) == list(VOC_CLASSES)  # VOC's own names: the 20 VOC classes
    mine = user_voc(tmp_path / "m", classes=("plum", "pear"), n=4, classes_txt=True)
    assert read_classes(mine) == ["plum", "pear"]  # classes.txt wins, in its order
    report = check(fruit)
    assert report.problems == []
    assert (
        "  3 classes (the names in Annotations/: no classes.txt): apple, pear, plum" in report.lines
    )


def _table(out: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^  (\w+)\s+(-?[\d.]+|nan)$", out, re.M)}


def test_detect_on_own_classes_names_the_per_class_ap(fruit, tmp_path, capsys):
    out = tmp_path / "det"
    args = ["transfer", "detect", "--encoder", "random:tiny", "--data", str(fruit)]
    args += ["--preset", "small", "--input-size", "64", "--epochs", "1", "--out", str(out)]
    assert cli_main(args) == 0
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    ap = m["per_class_AP_voc07"]
    assert list(ap) == ["apple", "pear", "plum"]
    assert m["mAP_voc07"] == pytest.approx(np.nanmean(list(ap.values())))
    assert list(m["per_class_AP50"]) == ["apple", "pear", "plum"]
    table = _table(capsys.readouterr().out)
    assert list(table) == ["apple", "pear", "plum"]
    assert all(table[k] == pytest.approx(v, abs=0.005) for k, v in ap.items())


def test_segment_on_own_classes_names_the_per_class_iou(fruit, tmp_path, capsys):
    # a segmentation-only copy with 2 classes named in classes.txt (the masks hold 0..3: 3 -> 2)
    seg = tmp_path / "seg"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        shutil.copytree(fruit / d, seg / d)
    for m in (seg / "SegmentationClass").glob("*.png"):
        arr = np.asarray(Image.open(m))
        Image.fromarray(np.minimum(arr, 2).astype(np.uint8), mode="L").save(m)
    (seg / "classes.txt").write_text("fruit\nleaf\n")
    assert check(seg).problems == [] and check(seg, task="detection").problems
    out = tmp_path / "run"
    args = ["transfer", "segment", "--encoder", "random:tiny", "--data", str(seg)]
    args += ["--preset", "small", "--input-size", "64", "--epochs", "1", "--out", str(out)]
    assert cli_main(args) == 0
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["classes"] == ["background", "fruit", "leaf"]
    assert list(m["per_class_IoU"]) == m["classes"]
    assert list(m["per_class_IoU"].values()) == m["per_class_iou"]
    table = _table(capsys.readouterr().out)
    assert list(table) == ["background", "fruit", "leaf"]
    assert all(table[k] == pytest.approx(v, abs=0.005) for k, v in m["per_class_IoU"].items())
