"""Transfer metrics against hand-computed cases: VOC mAP, COCO AP (pycocotools), mIoU, top-1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cebench.transfer.metrics import (
    ConfusionMatrix,
    DetectionEvaluator,
    coco_gt_from_targets,
    top1,
    voc_mean_ap,
)


def test_top1():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top1(scores, torch.tensor([0, 1, 1])) == pytest.approx(200 / 3)


def test_voc_map_known_ranking_and_difficult_ignored():
    # class 0: ranking pos, neg, pos, neg -> AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    scores = np.array([[0.9, 0.1], [0.8, 0.1], [0.7, 0.1], [0.6, 0.1]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    m, per_class = voc_mean_ap(scores, targets)
    assert per_class[0] == pytest.approx(100 * 5 / 6)
    assert math.isnan(per_class[1])  # no positive: left out of the mean
    assert m == pytest.approx(100 * 5 / 6)
    # a difficult-only image (-1) ranked first is ignored ...
    s2 = np.vstack([[0.95, 0.1], scores])
    ignored, _ = voc_mean_ap(s2, np.vstack([[-1, 0], targets]))
    assert ignored == pytest.approx(100 * 5 / 6)
    # ... whereas as a negative it halves the precision: AP = 0.5 * 1/2 + 0.5 * 2/4 = 0.5
    as_negative, _ = voc_mean_ap(s2, np.vstack([[0, 0], targets]))
    assert as_negative == pytest.approx(50.0)


def test_confusion_matrix_miou_pixel_acc():
    cm = ConfusionMatrix(4)
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    cm.update(target, pred)
    cm.reduce_from_all_processes()  # no process group: a no-op
    out = cm.compute()
    # IU: class 0 = 1/3, class 1 = 2/3, class 2 = 0, class 3 absent (no union) -> left out
    assert out["per_class_iou"][:3] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert math.isnan(out["per_class_iou"][3])
    assert out["mIoU"] == pytest.approx(100 / 3)
    assert out["pixel_acc"] == pytest.approx(60.0)  # 3 of 5 labelled pixels (255 ignored)
    assert cm.mat.sum() == 5


def _gt(difficult_d: bool | None):
    boxes = [[0, 0, 10, 10], [20, 20, 30, 30]]
    diff = [False, False]
    if difficult_d is not None:
        boxes.append([40, 40, 50, 50])
        diff.append(difficult_d)
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "difficult": torch.tensor(diff),
        "image_id": 7,
    }
    return coco_gt_from_targets([t], [(64, 64)], num_classes=2)


def _evaluate(gt, boxes, scores):
    ev = DetectionEvaluator(gt)
    ev.update(
        {
            7: {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "scores": torch.tensor(scores),
                "labels": torch.ones(len(boxes), dtype=torch.int64),
            }
        }
    )
    ev.synchronize_between_processes()
    return ev.summarize()


def test_coco_ap_perfect_detections():
    m = _evaluate(_gt(None), [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8])
    assert (
        m["AP"] == pytest.approx(100.0)
        and m["AP50"] == pytest.approx(100.0)
        and m["AP75"] == pytest.approx(100.0)
    )
    assert m["per_class_AP"]["1"] == pytest.approx(100.0)


def test_coco_ap_known_imperfect_case_and_difficult():
    dets = [[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]]
    # TP, FP, TP: precision 1 up to recall 0.5, then 2/3; 101-point interpolation:
    # (51 * 1 + 50 * 2/3) / 101
    expected = 100 * (51 + 50 * 2 / 3) / 101
    m = _evaluate(_gt(None), dets, [0.9, 0.8, 0.7])
    assert m["AP50"] == pytest.approx(expected, abs=1e-6) and m["AP"] == pytest.approx(
        expected, abs=1e-6
    )
    # the "false positive" lies on a difficult object: ignored, so AP is perfect
    assert _evaluate(_gt(True), dets, [0.9, 0.8, 0.7])["AP50"] == pytest.approx(100.0)
    # an undetected difficult object is not a miss; an undetected normal one is
    two = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert _evaluate(_gt(True), two, [0.9, 0.7])["AP50"] == pytest.approx(100.0)
    assert _evaluate(_gt(False), two, [0.9, 0.7])["AP50"] == pytest.approx(100 * 67 / 101, abs=1e-6)


def test_coco_no_detections_is_zero():
    m = _evaluate(_gt(None), [], [])
    assert m["AP50"] == 0.0


def test_voc07_11_point_ap_hand_computed_and_differs_from_area():
    """Ranking TP, FP, TP, FP: recall .5 .5 1 1, precision 1 .5 2/3 .5.
    11-point: t = 0..0.5 -> 1 (6 points), t = 0.6..1 -> 2/3 (5 points): (6 + 10/3) / 11.
    Area (scikit-learn): 0.5 * 1 + 0.5 * 2/3 = 5/6."""
    from cebench.transfer.metrics import ranking_pr, voc07_ap, voc07_mean_ap, voc_mean_ap

    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[1], [0], [1], [0]])
    r, p = ranking_pr(scores[:, 0], targets[:, 0] > 0)
    np.testing.assert_allclose(r, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(p, [1.0, 0.5, 2 / 3, 0.5])
    assert voc07_ap(r, p) == pytest.approx((6 + 10 / 3) / 11)
    m07, _ = voc07_mean_ap(scores, targets)
    marea, _ = voc_mean_ap(scores, targets)
    assert m07 == pytest.approx(100 * (6 + 10 / 3) / 11)
    assert marea == pytest.approx(100 * 5 / 6)
    # a difficult-only (-1) example is left out of the ranking: same AP as without it
    with_difficult = np.array([[1], [0], [-1], [1], [0]])
    s2 = np.array([[0.9], [0.8], [0.75], [0.7], [0.6]])
    assert voc07_mean_ap(s2, with_difficult)[0] == pytest.approx(m07)
    # recall never reaching a threshold counts 0 there: one of two positives never ranked
    r, p = ranking_pr(np.array([0.9]), np.array([True]), n_positive=2)
    assert voc07_ap(r, p) == pytest.approx(6 / 11)
