"""Bad input gives a DatasetError naming the file and the problem; property tests of the VOC XML reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cebench.core.errors import DatasetError
from cebench.data import CocoDetection, VOCClassification, VOCDetection, VOCSegmentation
from cebench.data.voc import load_segmentation_mask, parse_annotation

CLASSES = ["cat", "dog", "emu"]


def save_palette_png(values: np.ndarray, path: Path) -> None:
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    im.putpalette(list(range(256)) * 3)  # without a palette PIL may renumber the indices on save
    im.save(path)


def xml_text(width: int, height: int, objects: list[tuple]) -> str:
    """objects: (name, xmin, ymin, xmax, ymax, difficult) in VOC's 1-based inclusive convention."""
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects
    )
    return (
        f"<annotation><filename>a.jpg</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def make_voc(root: Path, images: dict[str, list[tuple]], size: int = 16) -> Path:
    """A minimal VOC root with classes.txt, one split 'train' and a black image per id."""
    for sub in (
        "JPEGImages",
        "Annotations",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for image_id, objects in images.items():
        Image.new("RGB", (size, size)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml_text(size, size, objects))
        save_palette_png(np.zeros((size, size)), root / "SegmentationClass" / f"{image_id}.png")
    for task in ("Main", "Segmentation"):
        (root / "ImageSets" / task / "train.txt").write_text("".join(f"{i}\n" for i in images))
    return root


def test_voc_classification_ignore_only_for_difficult_only_classes(tmp_path):
    root = make_voc(
        tmp_path,
        {
            "a": [("cat", 1, 1, 5, 5, 1), ("dog", 1, 1, 5, 5, 0), ("dog", 2, 2, 8, 8, 1)],
            "b": [("emu", 3, 3, 4, 4, 0)],
        },
    )
    ds = VOCClassification(root, "train")
    _, labels, ignore = ds[0]
    assert labels.tolist() == [1.0, 1.0, 0.0] and ignore.tolist() == [True, False, False]
    _, labels, ignore = ds[1]
    assert labels.tolist() == [0.0, 0.0, 1.0] and not ignore.any()
    _, target = VOCDetection(root, "train")[0]
    assert target["boxes"].tolist() == [
        [0, 0, 5, 5],
        [0, 0, 5, 5],
        [1, 1, 8, 8],
    ]  # 1-based -> 0-based xyxy
    assert target["labels"].tolist() == [1, 2, 2] and target["difficult"].tolist() == [
        True,
        False,
        True,
    ]


@pytest.mark.parametrize(
    "objects, match",
    [
        ([("cat", 0, 1, 5, 5, 0)], "outside the 16x16 image"),
        ([("cat", 1, 1, 17, 5, 0)], "outside the 16x16 image"),
        ([("cat", 6, 1, 5, 5, 0)], r"empty \(xmax < xmin"),
        ([("cat", 1, 9, 5, 8, 0)], r"empty \(xmax < xmin or ymax < ymin\)"),
        ([("cow", 1, 1, 5, 5, 0)], "unknown class 'cow'"),
        ([("cat", 1, 1, "five", 5, 0)], "<xmax> is not a number: .five."),
        ([("cat", 1, 1, 5, 5, 2)], "<difficult> is '2'"),
    ],
)
def test_bad_annotations_name_file_and_problem(tmp_path, objects, match):
    path = tmp_path / "x.xml"
    path.write_text(xml_text(16, 16, objects))
    with pytest.raises(DatasetError, match=match) as err:
        parse_annotation(path, CLASSES)
    assert str(err.value).startswith(str(path))
    make_voc(tmp_path / "voc", {"im": objects})
    with pytest.raises(DatasetError, match=match):  # the dataset fails when built, not mid-epoch
        VOCDetection(tmp_path / "voc", "train")


def test_fractional_coordinates_are_kept(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(xml_text(16, 16, [("dog", 2.5, 1, 9.25, 4.0, 0)]))
    assert parse_annotation(path, CLASSES).boxes.tolist() == [[1.5, 0, 9.25, 4]]
    path.write_text(xml_text(16.5, 16, []))
    with pytest.raises(DatasetError, match="<width> is not a whole number: '16.5'"):
        parse_annotation(path, CLASSES)


def test_malformed_xml_and_missing_parts(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<annotation><size><width>3</width></annotation")
    with pytest.raises(DatasetError, match=r"x\.xml: malformed XML"):
        parse_annotation(path, CLASSES)
    path.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(DatasetError, match="no <size>"):
        parse_annotation(path, CLASSES)
    with pytest.raises(DatasetError, match="annotation file not found"):
        parse_annotation(tmp_path / "none.xml", CLASSES)


def test_missing_paths_and_split_files(tmp_path):
    with pytest.raises(DatasetError, match="VOC root not found"):
        VOCDetection(tmp_path / "nowhere", "train")
    root = make_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 5, 5, 0)]})
    with pytest.raises(
        DatasetError, match=r"val\.txt: split file not found \(available splits: \['train'\]\)"
    ):
        VOCClassification(root, "val")
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a\.jpg: image listed in the split but not found"):
        VOCDetection(root, "train")


def test_truncated_image_fails_when_read(tmp_path):
    root = make_voc(tmp_path, {"a": [("cat", 1, 1, 5, 5, 0)]})
    path = root / "JPEGImages" / "a.jpg"
    path.write_bytes(path.read_bytes()[:40])
    ds = VOCDetection(root, "train")
    with pytest.raises(DatasetError, match=r"a\.jpg: cannot read image"):
        ds[0]


def test_segmentation_mask_values_outside_classes(tmp_path):
    root = make_voc(tmp_path, {"a": []})
    values = np.zeros((16, 16), np.uint8)
    # 3 = emu is fine, 255 = ignore is fine, 7 is not
    values[0, 0], values[1, 1], values[2, 2] = 3, 255, 7
    save_palette_png(values, root / "SegmentationClass" / "a.png")
    with pytest.raises(
        DatasetError, match=r"a\.png: mask values \[7\] outside the class range 0\.\.3"
    ):
        VOCSegmentation(root, "train")[0]
    Image.new("RGB", (16, 16)).save(root / "SegmentationClass" / "a.png")
    with pytest.raises(DatasetError, match="mode RGB; expected a palette"):
        load_segmentation_mask(root / "SegmentationClass" / "a.png", 3)
    (root / "SegmentationClass" / "a.png").unlink()
    with pytest.raises(DatasetError, match="segmentation mask not found"):
        VOCSegmentation(root, "train")


def _coco(tmp_path: Path, mutate=None) -> Path:
    Image.new("RGB", (10, 10)).save(tmp_path / "1.jpg")
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0,
             "segmentation": [[1, 2, 4, 2, 4, 6, 1, 6]]},
        ],
        "categories": [{"id": 3, "name": "cat"}],
    }  # fmt: skip
    if mutate:
        mutate(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reader_on_a_handwritten_file(tmp_path):
    ds = CocoDetection(tmp_path, _coco(tmp_path))
    _, target = ds[0]
    assert target["boxes"].tolist() == [[1, 2, 4, 6]] and target["labels"].tolist() == [1]
    assert ds.label_to_cat_id == {1: 3} and target["masks"][0].sum() > 0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("annotations"), "missing or non-list key 'annotations'"),
        (lambda d: d["annotations"][0].update(category_id=9), "unknown category_id 9"),
        (lambda d: d["annotations"][0].update(image_id=5), "unknown image_id 5"),
        (lambda d: d["annotations"][0].update(bbox=[8, 8, 5, 5]), "outside the 10x10 image"),
        (lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]), "non-positive width"),
        (lambda d: d["annotations"][0].update(bbox="oops"), r"is not \[x, y, w, h\]"),
    ],
)
def test_bad_coco_json(tmp_path, mutate, match):
    with pytest.raises(DatasetError, match=match) as err:
        CocoDetection(tmp_path, _coco(tmp_path, mutate))
    assert str(err.value).startswith(str(tmp_path / "ann.json"))


def test_coco_syntax_error_and_missing_file(tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"ann\.json: malformed JSON"):
        CocoDetection(tmp_path, tmp_path / "ann.json")
    with pytest.raises(DatasetError, match="COCO annotation file not found"):
        CocoDetection(tmp_path, tmp_path / "none.json")


# ---- property tests of the VOC XML reader -------------------------------------------------------

_size = st.tuples(st.integers(1, 500), st.integers(1, 500))


@st.composite
def _valid(draw):
    w, h = draw(_size)
    objects = []
    for _ in range(draw(st.integers(0, 5))):
        x1, x2 = sorted(draw(st.tuples(st.integers(1, w), st.integers(1, w))))
        y1, y2 = sorted(draw(st.tuples(st.integers(1, h), st.integers(1, h))))
        objects.append((draw(st.sampled_from(CLASSES)), x1, y1, x2, y2, draw(st.integers(0, 1))))
    return w, h, objects


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_valid())
def test_valid_annotations_round_trip(tmp_path, case):
    w, h, objects = case
    path = tmp_path / "p.xml"
    path.write_text(xml_text(w, h, objects))
    ann = parse_annotation(path, CLASSES)
    assert (ann.width, ann.height) == (w, h) and ann.names == [o[0] for o in objects]
    expected = np.array(
        [[x1 - 1, y1 - 1, x2, y2] for _, x1, y1, x2, y2, _ in objects], np.float32
    ).reshape(-1, 4)
    np.testing.assert_array_equal(ann.boxes, expected)
    assert ann.labels.tolist() == [CLASSES.index(o[0]) + 1 for o in objects]
    assert ann.difficult.tolist() == [bool(o[5]) for o in objects]
    assert (
        np.all(ann.boxes[:, 2:] > ann.boxes[:, :2])
        and np.all(ann.boxes[:, 2] <= w)
        and np.all(ann.boxes[:, 3] <= h)
    )


@st.composite
def _invalid(draw):
    w, h, objects = draw(_valid().filter(lambda c: c[2]))
    k = draw(st.integers(0, len(objects) - 1))
    name, x1, y1, x2, y2, d = objects[k]
    kind = draw(st.sampled_from(["outside", "empty", "unknown"]))
    if kind == "outside":
        which = draw(st.sampled_from(["x1", "y1", "x2", "y2"]))
        if which == "x1":
            x1 = draw(st.integers(-5, 0))
        elif which == "y1":
            y1 = draw(st.integers(-5, 0))
        elif which == "x2":
            x2 = w + draw(st.integers(1, 50))
        else:
            y2 = h + draw(st.integers(1, 50))
        match = "outside the"
    elif kind == "empty":
        if draw(st.booleans()):
            x1, x2 = x1 + draw(st.integers(1, 5)) + (x2 - x1), x1
        else:
            y1, y2 = y1 + draw(st.integers(1, 5)) + (y2 - y1), y1
        match = "is empty|outside the"
    else:
        name = draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).filter(
                lambda s: s not in CLASSES
            )
        )
        match = "unknown class"
    objects[k] = (name, x1, y1, x2, y2, d)
    return w, h, objects, match, k


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_invalid())
def test_invalid_annotations_are_rejected(tmp_path, case):
    w, h, objects, match, k = case
    path = tmp_path / "bad.xml"
    path.write_text(xml_text(w, h, objects))
    with pytest.raises(DatasetError, match=match) as err:
        parse_annotation(path, CLASSES)
    assert str(err.value).startswith(str(path))


def test_imagefolder_without_the_presets_splits_names_the_fix(tmp_path):
    """The paper preset's VOC07 splits (trainval/test) on an ImageFolder root with train/ and val/:
    one line naming the missing folders, the ones there, and the --set that fits."""
    from cebench.core.errors import DatasetError
    from cebench.transfer.data import classification_splits
    from tests._train_helpers import write_images

    for split in ("train", "val"):
        write_images(tmp_path / "folder" / split, n=4, classes=2)
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(DatasetError) as e:
        classification_splits(tmp_path / "folder", "imagefolder", "trainval", "test", 32, norm)
    msg = str(e.value)
    assert "no split folder trainval/ or test/" in msg and "has train, val" in msg
    assert "--set train_split=train --set val_split=val" in msg and "\n" not in msg
    tr, va = classification_splits(tmp_path / "folder", "imagefolder", "train", "val", 32, norm)
    assert len(tr) == len(va) == 4
