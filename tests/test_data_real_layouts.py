"""Datasets as users bring them: VOC roots with label masks, segmentation-only VOC folders, masks
that do not fit the class list, zero-area boxes, and the cached listing of large trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cebench.cli import main as cli_main
from cebench.core.errors import DatasetError
from cebench.data import listing
from cebench.data.check import check
from cebench.data.images import first_image, list_image_strings, list_images
from cebench.data.layout import detect_layout, pretrain_images
from cebench.data.synth import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("real") / "synth"
    generate(root, size=32, images=8, unlabelled=4, folder_images=12, seed=0)
    return root


def seg_only(synth: Path, where: Path) -> Path:
    """A segmentation-only VOC 2012 root (no Annotations/, no ImageSets/Main/, no classes.txt)."""
    voc = where / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets").mkdir(parents=True)
    for d in ("JPEGImages", "SegmentationClass"):
        shutil.copytree(synth / "VOC" / d, voc / d)
    shutil.copytree(synth / "VOC/ImageSets/Segmentation", voc / "ImageSets/Segmentation")
    return voc


# ----- 1. pretraining takes a layout's photos only


def test_pretrain_images_take_the_photos_of_each_layout(synth, tmp_path):
    paths, note = pretrain_images(synth)
    assert paths == list_image_strings(synth / "unlabelled") and len(paths) == 4
    assert note == f"built-in root {synth}: 4 images from unlabelled/"

    voc = synth / "VOC"
    assert len(list_images(voc)) == 16  # 8 photos + 8 SegmentationClass masks
    paths, note = pretrain_images(voc)
    assert paths == list_image_strings(voc / "JPEGImages") and len(paths) == 8
    assert "8 images from JPEGImages (all splits)" in note
    train_ids = (voc / "ImageSets/Main/train.txt").read_text().split()
    paths, note = pretrain_images(voc, "train")
    assert [Path(p).stem for p in paths] == train_ids
    assert note == f"VOC root {voc}: 4 train images from JPEGImages (ImageSets/Main/train.txt)"
    with pytest.raises(DatasetError, match="test.txt: split file not found"):
        pretrain_images(voc, "test")

    # segmentation-only, from the folder above VOCdevkit: its Segmentation split
    seg = seg_only(synth, tmp_path / "user")
    paths, note = pretrain_images(tmp_path / "user", "val")
    val_ids = (seg / "ImageSets/Segmentation/val.txt").read_text().split()
    assert [Path(p).stem for p in paths] == val_ids and "ImageSets/Segmentation/val.txt" in note

    paths, note = pretrain_images(synth / "imagefolder", "val")
    assert paths == list_image_strings(synth / "imagefolder" / "val")
    with pytest.raises(DatasetError, match="no test/ split folder"):
        pretrain_images(synth / "imagefolder", "test")

    paths, note = pretrain_images(synth / "coco")
    assert paths == list_image_strings(voc / "JPEGImages") and "COCO root" in note


def test_plain_folder_with_masks_warns(synth, tmp_path):
    plain = tmp_path / "mine"
    shutil.copytree(synth / "VOC" / "JPEGImages", plain / "photos")
    paths, note = pretrain_images(plain)
    assert len(paths) == 8 and "warning" not in note
    shutil.copytree(synth / "VOC" / "SegmentationClass", plain / "labels" / "masks")
    paths, note = pretrain_images(plain)
    assert len(paths) == 16
    assert "warning: labels/ look like label masks" in note
    # a SegmentationClass/ beside the photos makes it a VOC root: JPEGImages/ is then needed
    shutil.move(plain / "labels" / "masks", plain / "SegmentationClass")
    with pytest.raises(DatasetError, match="without JPEGImages/, so without photos"):
        pretrain_images(plain)


def test_pretraining_on_a_voc_root_reads_no_mask(synth, tmp_path, capsys):
    from cebench.pretrain.train import run
    from tests._train_helpers import tiny_config

    cfg = tiny_config(synth / "VOC", tmp_path / "r", ["train.steps=1", "data.split=train"])
    run(cfg)
    err = capsys.readouterr().err
    assert f"VOC root {synth / 'VOC'}: 4 train images from JPEGImages" in err


# ----- 2. segmentation-only VOC folders


def test_segmentation_only_voc_passes_and_fails_only_for_detection(synth, tmp_path):
    seg = seg_only(synth, tmp_path / "user")
    assert detect_layout(tmp_path / "user") == [("voc", seg)]  # the folder above VOCdevkit
    report = check(tmp_path / "user")
    assert report.formats == ["voc"] and report.problems == []
    text = "\n".join(report.lines)
    assert "detection: not readable (no Annotations/, ImageSets/Main/)" in text
    assert "segmentation: readable" in text
    assert "segmentation split val: 4 images" in text
    report = check(seg, task="detection")
    assert sorted(report.problems) == [
        f"{seg / 'Annotations'}: folder missing (needed for detection)",
        f"{seg / 'ImageSets/Main'}: folder missing (needed for detection)",
    ]
    assert check(seg, task="segmentation").problems == []
    # detection half there (Annotations/ but no split files): a problem without --task too
    (seg / "Annotations").mkdir()
    assert check(seg).problems == [
        f"{seg / 'ImageSets/Main'}: folder missing (needed for detection)"
    ]
    # a root no task can read
    bare = tmp_path / "bare" / "VOC2007"
    (bare / "JPEGImages").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(bare / "JPEGImages" / "a.jpg")
    assert any("no VOC task can read it" in p for p in check(bare).problems)


def test_cli_check_exit_codes_by_task(synth, tmp_path, capsys):
    seg_only(synth, tmp_path / "user")
    assert cli_main(["data", "check", str(tmp_path / "user")]) == 0
    assert cli_main(["data", "check", str(tmp_path / "user"), "--task", "detection"]) == 1
    assert "needed for detection" in capsys.readouterr().out


# ----- 3. labels that do not fit


def test_mask_values_beside_the_classes(synth, tmp_path):
    seg = seg_only(synth, tmp_path / "user")
    for m in (seg / "SegmentationClass").glob("*.png"):  # a 2-class set: values 0, 1, 2, 255
        arr = np.asarray(Image.open(m))
        out = np.where(arr == 255, 255, np.minimum(arr, 2)).astype(np.uint8)
        Image.fromarray(out, mode="L").save(m)
    report = check(seg)
    line = next(x for x in report.lines if "mask values" in x)
    assert line.startswith("  mask values (masks holding each): 0 background (8), 1 aeroplane (")
    assert "2 bicycle" in line and "255 ignore" in line and "3 " not in line
    assert report.warnings == [
        f"{seg / 'SegmentationClass'}: 18 of the 20 classes never occur in a mask (bird, boat, "
        "bottle, bus, car, cat, chair, cow, ...); without classes.txt the 20 VOC names are assumed"
    ]
    (seg / "classes.txt").write_text("road\ncar\n")
    report = check(seg)
    assert report.problems == [] and report.warnings == []
    assert "1 road" in next(x for x in report.lines if "mask values" in x)
    (seg / "classes.txt").write_text("road\n")  # value 2 has no class now
    report = check(seg)
    assert any("mask values [2] outside the class range 0..1" in p for p in report.problems)
    assert "2 NO CLASS" in next(x for x in report.lines if "mask values" in x)


def _box_xml(xmin: int, xmax: int) -> str:
    return (
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>20</height>"
        "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>2</ymin><xmax>{xmax}</xmax><ymax>9</ymax></bndbox>"
        "</object></annotation>"
    )


def det_root(tmp_path: Path, xml: str) -> Path:
    voc = tmp_path / "det"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20)).save(voc / "JPEGImages" / "a.jpg")
    (voc / "Annotations" / "a.xml").write_text(xml)
    (voc / "classes.txt").write_text("cat\n")
    (voc / "ImageSets/Main/train.txt").write_text("a\n")
    return voc


def test_zero_area_box_warns_and_empty_box_message(tmp_path):
    voc = det_root(tmp_path, _box_xml(5, 5))
    report = check(voc)
    assert report.problems == []
    assert report.warnings == [
        f"{voc / 'Annotations/a.xml'}: object 0 (cat) box xmin=5 ymin=2 xmax=5 ymax=9 has zero "
        "area as drawn (xmax == xmin or ymax == ymin; VOC reads it as one pixel wide)"
    ]
    (voc / "Annotations" / "a.xml").write_text(_box_xml(5, 6))
    assert check(voc).warnings == []
    (voc / "Annotations" / "a.xml").write_text(_box_xml(5, 4))
    (problem,) = check(voc).problems
    assert problem.endswith("is empty (xmax < xmin or ymax < ymin)")


def test_trainval_must_be_train_plus_val(tmp_path):
    voc = det_root(tmp_path, _box_xml(5, 9))
    for i in "bc":
        shutil.copy(voc / "JPEGImages/a.jpg", voc / f"JPEGImages/{i}.jpg")
        shutil.copy(voc / "Annotations/a.xml", voc / f"Annotations/{i}.xml")
    main = voc / "ImageSets/Main"
    (main / "val.txt").write_text("b\n")
    (main / "trainval.txt").write_text("a\nb\n")
    assert check(voc).problems == []
    (main / "trainval.txt").write_text("a\nc\n")
    assert sorted(check(voc).problems) == [
        f"{main}: trainval.txt lacks 1 id(s) of train.txt or val.txt (e.g. b); trainval must be train + val",
        f"{main}: trainval.txt lists 1 id(s) that are in neither train.txt nor val.txt (e.g. c); "
        "trainval must be train + val",
    ]
    (main / "trainval.txt").write_text("a\nb\n")
    (main / "val.txt").write_text("a\nb\n")
    assert check(voc).problems == [f"{main}: train.txt and val.txt share 1 id(s) (e.g. a)"]


# ----- 6. large trees: a cached listing, a parallel check


def test_listing_cache_is_used_until_a_folder_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("CEBENCH_LISTING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(listing, "CACHE_MIN_FILES", 3)
    monkeypatch.setattr(listing, "SETTLE_S", 0.0)
    tree = tmp_path / "tree"
    for rel in (
        "b/x.jpg",
        "b/y.png",
        "a-c.jpg",
        "a/z.JPG",
        "a/q/r.jpg",
        ".hidden/h.jpg",
        "a/n.txt",
    ):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"")
    first = list_images(tree)
    # the order of sorted(Path): part by part ("a/..." before "a-c.jpg")
    assert [p.relative_to(tree).as_posix() for p in first] == [
        "a/q/r.jpg", "a/z.JPG", "a-c.jpg", "b/x.jpg", "b/y.png"
    ]  # fmt: skip
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    def no_walk(*a):
        raise AssertionError("listed again although nothing changed")

    monkeypatch.setattr(listing, "_walk", no_walk)
    assert list_images(tree) == first
    monkeypatch.undo()
    monkeypatch.setenv("CEBENCH_LISTING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(listing, "CACHE_MIN_FILES", 3)
    (tree / "a/q/new.jpg").write_bytes(b"")  # a changed folder is listed again
    assert tree / "a/q/new.jpg" in list_images(tree)
    monkeypatch.setenv("CEBENCH_LISTING_CACHE", "off")
    assert len(list_images(tree)) == 6
    assert first_image(tree) == tree / "a/q/new.jpg"


def test_parallel_check_reports_the_same(synth, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(synth / "unlabelled", folder)
    for k in range(70):  # above the 64 images a worker must have before a second one starts
        shutil.copy(next(folder.glob("*.png")), folder / f"copy{k:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    one, two = check(folder, workers=1), check(folder, workers=2)
    assert one.lines == two.lines and one.problems == two.problems
    assert len(one.problems) == 1 and "broken.jpg: cannot read image" in one.problems[0]


def test_listing_order_is_sorted_paths_on_a_random_tree(tmp_path, monkeypatch):
    """The listing's order without a global sort equals sorted(Path) of an os.walk (the naive
    reference), on names that interleave files and folders, cases and separators-like chars."""
    import os
    import random

    monkeypatch.setenv("CEBENCH_LISTING_CACHE", "off")
    rng = random.Random(0)
    chars = "aAbB-_.0Z~"
    folders = [tmp_path / "t"]
    for _ in range(40):
        parent = rng.choice(folders)
        name = "".join(rng.choice(chars) for _ in range(rng.randint(1, 3))).strip(".") or "d"
        if not (parent / name).exists():
            (parent / name).mkdir(parents=True)
            folders.append(parent / name)
    for _ in range(150):
        stem = "".join(rng.choice(chars) for _ in range(rng.randint(1, 3)))
        f = rng.choice(folders) / (stem + rng.choice([".jpg", ".PNG", ".txt"]))
        if not f.exists() and not stem.startswith("."):
            f.write_bytes(b"")
    ref = []
    for dirpath, dirnames, filenames in os.walk(tmp_path / "t"):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        ref += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and f.lower().endswith((".jpg", ".png"))
        ]
    assert len(ref) > 50
    assert list_images(tmp_path / "t") == sorted(ref)
