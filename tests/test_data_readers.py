"""Every reader round-trips the generator: what `cebench data synth` recorded is what the readers return."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from cebench.data import (
    CocoDetection,
    ImageFiles,
    ImageFolderDataset,
    VOCClassification,
    VOCDetection,
    VOCSegmentation,
    read_classes,
)
from cebench.data.scenes import CLASSES
from cebench.data.synth import folder_scene, generate, unlabelled_scene, voc_scene

SEED, SIZE, N = 3, 40, 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, seed=SEED, size=SIZE, images=N, unlabelled=8, folder_images=18, workers=1)
    return out


def _voc_ids(split: str) -> list[int]:
    return list(range(N // 2)) if split == "train" else list(range(N // 2, N))


def test_read_classes(tiny, tmp_path):
    assert read_classes(tiny / "VOC") == list(CLASSES)
    assert read_classes(tmp_path)[:3] == [
        "aeroplane",
        "bicycle",
        "bird",
    ]  # no classes.txt: the 20 VOC ones


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_detection_matches_generator(tiny, split):
    ds = VOCDetection(tiny / "VOC", split)
    assert ds.classes == list(CLASSES) and len(ds) == N // 2
    for n, index in enumerate(_voc_ids(split)):
        scene = voc_scene(SEED, index, SIZE)
        img, target = ds[n]
        assert img.size == (SIZE, SIZE) and ds.ids[n] == f"{index + 1:06d}"
        expected = torch.tensor([o.box for o in scene.objects], dtype=torch.float32)
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [o.label for o in scene.objects]
        assert target["difficult"].tolist() == [o.difficult for o in scene.objects]
        assert target["image_id"] == n
        # JPEG is lossy but must show the same picture
        assert np.abs(np.asarray(img, dtype=float) - scene.image).mean() < 6


def test_boxes_are_tight_around_visible_pixels(tiny):
    for index in range(N):
        scene = voc_scene(SEED, index, SIZE)
        for k, o in enumerate(scene.objects):
            ys, xs = np.nonzero(scene.instances == k)
            assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert o.area == len(xs) > 0


def test_voc_segmentation_matches_generator(tiny):
    ds = VOCSegmentation(tiny / "VOC", "val")
    seen_border = False
    for n, index in enumerate(_voc_ids("val")):
        scene = voc_scene(SEED, index, SIZE)
        _, mask = ds[n]
        assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(mask.numpy(), scene.voc_mask())
        # away from the 255 border, the mask is the front-most object's class (occlusion respected)
        core = mask.numpy() != 255
        np.testing.assert_array_equal(mask.numpy()[core], scene.class_mask()[core])
        seen_border |= bool((mask == 255).any())
    assert seen_border
    with Image.open(tiny / "VOC" / "SegmentationClass" / "000001.png") as im:
        assert im.mode == "P"


def test_voc_classification_labels_and_difficult_ignore(tiny):
    ds = VOCClassification(tiny / "VOC", "trainval")
    assert len(ds) == N
    n_ignored = 0
    for index in range(N):
        scene = voc_scene(SEED, index, SIZE)
        _, labels, ignore = ds[index]
        for c in range(1, len(CLASSES) + 1):
            objs = [o for o in scene.objects if o.label == c]
            assert labels[c - 1].item() == float(bool(objs))
            assert ignore[c - 1].item() == (bool(objs) and all(o.difficult for o in objs))
        n_ignored += int(ignore.sum())
    assert labels.dtype == torch.float32 and ignore.dtype == torch.bool
    # VOC's <class>_<split>.txt agrees: 1 / 0 (only difficult) / -1
    lines = (
        (tiny / "VOC" / "ImageSets" / "Main" / f"{CLASSES[0]}_trainval.txt").read_text().split("\n")
    )
    flags = [int(line.split()[1]) for line in lines if line]
    expected = [
        0 if ig else (1 if lab else -1)
        for lab, ig in zip(ds.labels[:, 0], ds.ignore[:, 0], strict=True)
    ]
    assert flags == expected


def test_coco_json_loads_in_pycocotools_and_agrees_with_voc(tiny):
    coco = COCO(str(tiny / "coco" / "annotations" / "instances_val.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(CLASSES)
    ds = CocoDetection(
        tiny / "VOC" / "JPEGImages", tiny / "coco" / "annotations" / "instances_val.json"
    )
    voc = VOCDetection(tiny / "VOC", "val")
    assert ds.classes == list(CLASSES) and len(ds) == len(voc)
    assert ds.label_to_cat_id == {i + 1: i + 1 for i in range(len(CLASSES))}
    for n, index in enumerate(_voc_ids("val")):
        img, target = ds[n]
        _, vt = voc[n]
        scene = voc_scene(SEED, index, SIZE)
        torch.testing.assert_close(target["boxes"], vt["boxes"])
        assert torch.equal(target["labels"], vt["labels"])
        assert (
            target["masks"].shape == (len(scene.objects), SIZE, SIZE)
            and target["masks"].dtype == torch.uint8
        )
        for k in range(len(scene.objects)):
            np.testing.assert_array_equal(target["masks"][k].numpy(), scene.instances == k)
        assert target["image_id"] == index + 1
        areas = [a["area"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[index + 1]))]
        assert areas == [int(m.sum()) for m in target["masks"]]


def test_imagefolder_and_unlabelled_match_generator(tiny):
    train = ImageFolderDataset(tiny / "imagefolder" / "train")
    val = ImageFolderDataset(tiny / "imagefolder" / "val")
    assert train.classes == sorted(CLASSES) and len(train) + len(val) == 18 and len(val) == 6
    for ds in (train, val):
        for path, target in ds.samples:
            index = int(path.stem)
            assert train.classes[target] == CLASSES[index % len(CLASSES)]
            img, label = ds[ds.samples.index((path, target))]
            np.testing.assert_array_equal(np.asarray(img), folder_scene(SEED, index, SIZE).image)
    files = ImageFiles(tiny / "unlabelled")
    assert len(files) == 8
    np.testing.assert_array_equal(np.asarray(files[5]), unlabelled_scene(SEED, 5, SIZE).image)


def test_transforms_are_applied(tiny):
    def flip(img, target):
        return img.transpose(Image.FLIP_LEFT_RIGHT), {**target, "flipped": True}

    _, target = VOCDetection(tiny / "VOC", "train", transforms=flip)[0]
    assert target["flipped"]
    x, *_ = VOCClassification(tiny / "VOC", "train", transform=lambda im: np.asarray(im))[0]
    assert isinstance(x, np.ndarray) and x.shape == (SIZE, SIZE, 3)


def test_coco_eval_of_the_ground_truth_is_perfect(tiny):
    """VOC boxes fed to pycocotools' COCOeval as detections give AP 1: the two formats agree."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    ds = CocoDetection(
        tiny / "VOC" / "JPEGImages", tiny / "coco" / "annotations" / "instances_train.json"
    )
    voc = VOCDetection(tiny / "VOC", "train")
    dets = []
    for n in range(len(voc)):
        _, t = voc[n]
        for (x1, y1, x2, y2), lab in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            dets.append({"image_id": ds.ids[n], "category_id": ds.label_to_cat_id[lab],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(ds.coco, ds.coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
