"""The synthetic generator: layout, determinism, statistics, and that colour alone does not give the class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cebench.core.errors import DatasetError
from cebench.data.scenes import CLASSES, render_scene, shape_coverage
from cebench.data.synth import folder_scene, generate, voc_scene


def _files(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_synth_json(tmp_path):
    info = generate(
        tmp_path / "d", seed=0, size=32, images=10, unlabelled=4, folder_images=12, workers=1
    )
    root = tmp_path / "d"
    assert json.loads((root / "synth.json").read_text()) == info
    assert info["counts"] == {
        "unlabelled": 4,
        "VOC": {"train": 5, "val": 5},
        "imagefolder": {"train": 6, "val": 6},
    }
    assert (root / "VOC" / "classes.txt").read_text().split() == list(CLASSES)
    assert len(list((root / "VOC" / "JPEGImages").glob("*.jpg"))) == 10
    assert len(list((root / "VOC" / "Annotations").glob("*.xml"))) == 10
    assert len(list((root / "VOC" / "SegmentationClass").glob("*.png"))) == 10
    main = root / "VOC" / "ImageSets" / "Main"
    assert main.joinpath("trainval.txt").read_text().split() == [f"{i:06d}" for i in range(1, 11)]
    for c in CLASSES:
        assert len(main.joinpath(f"{c}_val.txt").read_text().splitlines()) == 5
    assert (root / "VOC" / "ImageSets" / "Segmentation" / "val.txt").is_file()
    for split in ("train", "val"):
        assert (root / "coco" / "annotations" / f"instances_{split}.json").is_file()
        assert sorted(p.name for p in (root / "imagefolder" / split).iterdir()) == sorted(CLASSES)
    stats = info["statistics"]["VOC"]
    assert 1 <= stats["objects_per_image"]["min"] <= stats["objects_per_image"]["max"] <= 4
    assert sum(stats["objects_per_class"].values()) == round(
        stats["objects_per_image"]["mean"] * 10
    )
    assert not list(tmp_path.glob(".*partial"))  # the temporary folder was renamed into place
    with pytest.raises(DatasetError, match="exists and is not empty"):
        generate(root, size=32, images=10, unlabelled=4, folder_images=12)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(DatasetError, match="refusing to replace"):
        generate(tmp_path / "mine", size=32, images=10, unlabelled=4, folder_images=12, force=True)


def test_deterministic_for_a_seed_whatever_the_workers_and_different_for_another(tmp_path):
    kw = dict(
        size=32, images=8, unlabelled=64, folder_images=12
    )  # 64 unlabelled: the pool really runs
    generate(tmp_path / "a", seed=5, workers=1, **kw)
    generate(tmp_path / "b", seed=5, workers=2, **kw)
    generate(tmp_path / "c", seed=6, workers=1, **kw)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    images = [k for k in a if k.endswith((".png", ".jpg"))]
    assert sum(a[k] != c[k] for k in images) == len(images)


def test_scenes_vary_in_the_ways_that_make_the_task_hard():
    scenes = [voc_scene(0, i, 64) for i in range(150)]
    objs = [o for s in scenes for o in s.objects]
    assert {o.label for o in objs} == set(range(1, len(CLASSES) + 1))
    assert any(o.difficult for o in objs) and not all(o.difficult for o in objs)
    assert any(len(s.objects) >= 3 for s in scenes)
    # occlusion: some object lost pixels to one drawn after it
    assert any(s.voc_mask().max() == 255 for s in scenes)
    areas = np.array([o.area for o in objs])
    assert areas.min() < 40 and areas.max() > 500  # small and large objects
    # textured backgrounds, not flat fills: plenty of distinct colours off the objects
    bg = scenes[0].image[scenes[0].instances < 0]
    assert len(np.unique(bg.reshape(-1, 3), axis=0)) > 0.5 * len(bg)


def test_classes_differ_in_shape_with_the_same_pose():
    covers = {c: shape_coverage(c, 48, 24, 24, 18, 1.0, 0.3) >= 0.5 for c in CLASSES}
    for i, a in enumerate(CLASSES):
        for b in CLASSES[i + 1 :]:
            iou = (covers[a] & covers[b]).sum() / (covers[a] | covers[b]).sum()
            assert iou < 0.85, (a, b, iou)
    ring = covers["ring"]
    assert not ring[24, 24] and ring[24, 24 + 14]  # hole in the middle


def test_occlusion_order_boxes_and_difficult():
    rng = np.random.default_rng(0)
    # a big square, a small disc on top of its centre, a tiny cross far away, and a star then
    # almost entirely covered by a later big disc
    poses = [(16, 16, 10, 1.0, 0.0), (16, 16, 4, 1.0, 0.0), (40, 6, 1.6, 1.0, 0.0), (40, 34, 5, 1.0, 0.0),
             (40, 41, 9, 1.0, 0.0)]  # fmt: skip
    scene = render_scene(rng, 48, 5, labels=[2, 1, 6, 4, 1], poses=poses)
    square, disc, cross, star, cover = scene.objects
    assert (
        scene.instances[16, 16] == 1 and scene.instances[16, 9] == 0
    )  # disc in front of the square
    assert square.box == (8, 8, 24, 24) and not square.difficult  # the hole does not shrink the box
    assert disc.area == int((scene.instances == 1).sum()) and disc.box == (12, 12, 20, 20)
    assert cross.difficult and cross.area < 10  # tiny
    assert star.difficult and star.area < 0.4 * 60  # mostly hidden behind the last disc
    assert not cover.difficult
    mask = scene.voc_mask()
    assert mask[16, 16] == 1 and mask[16, 10] == 2 and mask[2, 2] == 0
    assert mask[16, 7] == 255 and mask[16, 8] == 255  # 1 px each side of the square's edge


def test_class_is_not_predictable_from_mean_colour():
    """Logistic regression on per-image mean RGB of ImageFolder images scores near chance (1/6).

    Measured 0.172 / 0.142 / 0.225 (5-fold CV, 600 images, seeds 0/1/2) and 0.165 on 3000 images;
    chance is 0.167; 0.27 leaves ~6 standard errors (0.015) above chance.
    """
    x, y = [], []
    for i in range(600):
        x.append(folder_scene(1, i, 32).image.reshape(-1, 3).mean(axis=0))
        y.append(i % len(CLASSES))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    acc = cross_val_score(clf, np.array(x), np.array(y), cv=5).mean()
    assert acc < 0.27


def test_dead_leaves_radius_law_matches_the_analytic_mean():
    from cebench.data.scenes import leaf_radius

    rng = np.random.default_rng(0)
    r = np.array([leaf_radius(rng, 1.0, 2.0, 3.0) for _ in range(20000)])
    # p(r) ~ r^-3 on [1, 2]: E[r] = (1 - 1/2) / ((1 - 1/4) / 2) = 4/3
    assert r.min() >= 1.0 and r.max() <= 2.0
    assert abs(r.mean() - 4 / 3) < 0.01
    assert (
        abs(np.mean([leaf_radius(rng, 1.0, 2.0, 1.0) for _ in range(20000)]) - 1 / np.log(2)) < 0.01
    )


def test_dead_leaves_cover_the_image_with_occluding_objects():
    from cebench.data.scenes import render_dead_leaves

    scene = render_dead_leaves(np.random.default_rng(3), 48)
    inst = scene.instances
    assert (inst >= 0).mean() > 0.95  # covered by leaves, almost no background
    assert len(scene.objects) >= 8
    # each listed object's box and area are its visible pixels; the front-most is listed last
    for k, o in enumerate(scene.objects):
        ys, xs = np.nonzero(inst == k)
        assert o.area == len(ys) and o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_unlabelled_style_and_object_scale(tmp_path):
    kw = dict(seed=0, size=32, images=6, unlabelled=3, folder_images=12, workers=1)
    plain = generate(tmp_path / "a", **kw)
    leaves = generate(tmp_path / "b", unlabelled_style="dead-leaves", **kw)
    assert (plain["unlabelled_style"], leaves["unlabelled_style"]) == ("scenes", "dead-leaves")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    # only the unlabelled images (and synth.json) change; VOC and ImageFolder stay byte-identical
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"synth.json", *(k for k in a if k.startswith("unlabelled/"))}
    big = [voc_scene(0, i, 48, object_scale=1.5) for i in range(60)]
    small = [voc_scene(0, i, 48) for i in range(60)]
    area = lambda scenes: np.mean([o.area for s in scenes for o in s.objects])  # noqa: E731
    assert area(big) > 1.5 * area(small)
    with pytest.raises(DatasetError, match="unlabelled style 'leaves'"):
        generate(tmp_path / "c", unlabelled_style="leaves", **kw)
    with pytest.raises(DatasetError, match="object scale 9"):
        generate(tmp_path / "c", object_scale=9, **kw)
