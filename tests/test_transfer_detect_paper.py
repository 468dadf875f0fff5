"""Detection as the paper ran it: VOC2007 11-point mAP@0.5 (devkit rules), Fast R-CNN's c4 head,
the detector's own image size (600 / 1000 in the paper preset), a paper-style end-to-end run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.data.synth import generate
from cebench.transfer import detect
from cebench.transfer.args import replace_validated
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.metrics import (
    VOCDetectionEvaluator,
    coco_gt_from_targets,
    devkit_iou,
)
from cebench.transfer.tasks import preset_config

TINY = "random:tiny,width=8,depth=5"  # strides 2 .. 32; conv4 is the stride-16 stage



def _pred(boxes, scores, labels=None):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels or [1] * len(scores), dtype=torch.int64),
    }


def test_voc07_detection_ap_hand_computed_with_difficult_duplicate_and_miss():
    """Image 0: A [0,0,10,10], B [20,20,30,30] difficult; image 1: C [0,0,20,20], D missed.
    Detections by score: A (TP), A again (duplicate: FP), B (difficult: dropped), C (TP), a box on
    nothing (FP). Ranking TP FP TP FP over 3 non-difficult boxes: recall 1/3 1/3 2/3 2/3, precision
    1 1/2 2/3 1/2. 11-point AP: t = 0 .. 0.3 -> 1 (4 points), t = 0.4 .. 0.6 -> 2/3 (3 points),
    t = 0.7 .. 1 -> 0: (4 + 2) / 11. Counting the difficult hit as a FP would give 5.5 / 11."""
    gt = {
        0: {
            "boxes": [[0, 0, 10, 10], [20, 20, 30, 30]],
            "labels": [1, 1],
            "difficult": [False, True],
        },
        1: {"boxes": [[0, 0, 20, 20], [40, 40, 50, 50]], "labels": [1, 1], "difficult": [0, 0]},
    }
    ev = VOCDetectionEvaluator(gt)
    ev.update({0: _pred([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7])})
    ev.update({1: _pred([[0, 0, 20, 20], [60, 60, 70, 70]], [0.6, 0.5])})
    ev.synchronize_between_processes()
    m = ev.compute()
    assert m["mAP_voc07"] == pytest.approx(100 * 6 / 11)
    assert m["per_class_AP_voc07"] == {"1": pytest.approx(100 * 6 / 11)}


def test_voc07_match_goes_to_the_best_box_and_a_class_without_boxes_is_left_out():
    # the second detection overlaps A best (IoU .83) and B less (.6); A is taken: a duplicate
    # (FP) in the devkit, not a match to B (that would give AP 100). Class 2 has only a difficult box: nan, not in the mean.
    gt = {
        0: {
            "boxes": [[0, 0, 10, 10], [0, 0, 10, 20], [30, 30, 40, 40]],
            "labels": [1, 1, 2],
            "difficult": [0, 0, 1],
        }
    }
    ev = VOCDetectionEvaluator(gt)
    ev.update({0: _pred([[0, 0, 10, 10], [0, 0, 10, 12]], [0.9, 0.8])})
    m = ev.compute()
    # TP, FP over 2 boxes: recall .5 .5, precision 1 .5 -> t = 0 .. .5 at 1: 6 / 11
    assert m["per_class_AP_voc07"]["1"] == pytest.approx(100 * 6 / 11)
    assert m["mAP_voc07"] == pytest.approx(100 * 6 / 11)
    # IoU exactly 0.5 counts (the MATLAB devkit's >=)
    ev = VOCDetectionEvaluator(gt)
    ev.update({0: _pred([[0, 0, 10, 10], [0, 0, 10, 40]], [0.9, 0.8])})
    assert ev.compute()["per_class_AP_voc07"]["1"] == pytest.approx(100.0)


def test_devkit_iou_uses_the_annotation_pixels():
    """VOC xmin=1..xmax=10 and xmin=6..xmax=15 (rows 1..10) share 5 of 10 columns: IoU 50 / 150.
    The readers give them as [0, 0, 10, 10] and [5, 0, 15, 10]; applying the devkit's +1 to those
    0-based numbers directly would give 66 / 176."""
    assert devkit_iou([0, 0, 10, 10], [[5, 0, 15, 10]])[0] == pytest.approx(1 / 3)
    assert devkit_iou([0, 0, 10, 10], [[20, 20, 30, 30]])[0] == 0.0


def test_voc07_from_coco_ground_truth_perfect_detections():
    targets = [
        {
            "boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0], [5.0, 5.0, 9.0, 9.0]]),
            "labels": torch.tensor([1, 2]),
            "difficult": torch.tensor([False, True]),
            "image_id": 4,
        }
    ]
    gt = coco_gt_from_targets(targets, [(32, 32)], num_classes=2)
    ev = VOCDetectionEvaluator.from_coco(gt)
    ev.update({4: _pred([[2.0, 3.0, 20.0, 30.0]], [0.5], [1])})
    m = ev.compute()
    assert m["mAP_voc07"] == pytest.approx(100.0)
    assert m["per_class_AP_voc07"]["1"] == pytest.approx(100.0)
    assert m["per_class_AP_voc07"]["2"] != m["per_class_AP_voc07"]["2"]  # nan: difficult only


def test_c4_head_has_no_fpn_and_fresh_fc6_fc7():
    enc, info = resolve_encoder(TINY, input_size=48)
    cfg = preset_config("detect", "small", head="c4", representation_size=24, fc_dropout=0.3, roi_size=3)
    model = detect.build_detector(enc, 3, 48, cfg, info["normalize"])
    assert model.backbone.fpn is None and [n for n, _, _ in model.backbone.levels] == ["conv4"]
    assert isinstance(model.roi_heads.box_roi_pool, detect.RoIMaxPool)
    head = model.roi_heads.box_head
    assert head.fc6.in_features == enc.feature_info[3].channels * 3 * 3
    assert head.fc6.out_features == head.fc7.out_features == 24
    assert [m.p for m in head.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    encoder_params = {id(p) for p in enc.parameters()}
    assert not any(id(p) in encoder_params for p in head.parameters())
    # the FPN head (the default) is what the old `fpn: true` built
    fpn = detect.build_detector(enc, 3, 48, preset_config("detect", "small"), info["normalize"])
    assert fpn.backbone.fpn is not None and len(fpn.backbone.levels) > 1
    # a named stage; an unknown one and the removed key are one-line ConfigErrors
    named = detect.build_detector(
        enc, 3, 48, preset_config("detect", "small", head="c4", roi_stage="conv5"), info["normalize"]
    )
    assert named.backbone.levels[0][0] == "conv5"
    with pytest.raises(ConfigError, match="roi_stage"):
        detect.build_detector(
            enc, 3, 48, preset_config("detect", "small", head="c4", roi_stage="fc9"), info["normalize"]
        )
    with pytest.raises(ConfigError, match="'fpn' was replaced by 'head'"):
        preset_config("detect", "small", fpn=False)
    images = [torch.rand(3, 48, 40)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([2])}]
    model.train()
    sum(model(images, targets).values()).backward()
    assert head.fc6.weight.grad is not None and enc.feature_info  # trains end to end


def test_detector_transform_uses_min_and_max_size():
    enc, info = resolve_encoder(TINY, input_size=32)
    image = torch.rand(3, 30, 120)
    sized = detect.build_detector(
        enc, 3, 32, preset_config("detect", "small", min_size=40, max_size=64), info["normalize"]
    )
    assert sized.transform.min_size == (40,) and sized.transform.max_size == 64
    sized.eval()
    # shorter side 30 -> 40 would make the longer 160 > 64: scale min(40/30, 64/120) -> 16 x 64
    assert sized.transform([image])[0].image_sizes == [(16, 64)]
    old = detect.build_detector(enc, 3, 32, preset_config("detect", "small"), info["normalize"])
    old.eval()
    assert old.transform.min_size == (32,) and old.transform.max_size == 32
    assert old.transform([image])[0].image_sizes == [(8, 32)]
    paper = preset_config("detect", "paper")
    assert (paper.min_size, paper.max_size, paper.head, paper.ap) == (600, 1000, "c4", "voc07")
    assert detect.detector_size(paper, 227) == (600, 1000)
    with pytest.raises(ConfigError, match="max_size"):
        preset_config("detect", "small", min_size=64, max_size=32)


def test_c4_runs_alexnet_only_up_to_conv5_so_small_detector_images_work():
    """At 64 px AlexNet's conv5 is 2x2 and pool5 would be empty: the c4 head never runs pool5."""
    spec = "random:alexnet,width=0.25"
    enc, info = resolve_encoder(spec, input_size=227)
    cfg = preset_config("detect", "small", encoder=spec, head="c4", min_size=64, max_size=64, roi_size=6)
    model = detect.build_detector(enc, 3, 227, cfg, info["normalize"])
    assert model.backbone.levels[0][0] == "conv5"
    model.eval()
    with torch.no_grad():
        assert model([torch.rand(3, 64, 64)])[0]["boxes"].shape[-1] == 4
    with pytest.raises(ConfigError, match="cannot run on 32x32 detector images"):
        detect.build_detector(enc, 3, 227, replace_validated(cfg, min_size=32), info["normalize"])


@pytest.fixture(scope="module")
def voc48(tmp_path_factory):
    root = tmp_path_factory.mktemp("det-paper") / "data"
    generate(root, size=48, images=12, unlabelled=0, folder_images=12, workers=1)
    return root / "VOC"


def test_paper_style_run_end_to_end(voc48, tmp_path):
    cfg = preset_config("detect", "paper", 
        encoder=TINY,
        data=str(voc48),
        out=str(tmp_path / "det"),
        device="cpu",
        train_split="train",
        val_split="val",
        input_size=32,
        min_size=48,
        max_size=64,
        representation_size=32,
        rpn_pre_nms_top_n=100,
        rpn_post_nms_top_n=50,
        epochs=1,
        batch_size=3,
    )
    record = detect.run(cfg)
    m = record["metrics"]
    assert record["encoder"]["meta"]["rescale"]["mode"] == "full"  # Krähenbühl et al. first
    assert {"mAP_voc07", "AP", "AP50", "AP75", "per_class_AP_voc07"} <= set(m)
    assert m["score"] == m["mAP_voc07"] and m["score_metric"] == "mAP_voc07"
    assert 0 <= m["mAP_voc07"] <= 100 and m["image_size"] == [48, 64] and m["levels"] == ["conv4"]
    coco = detect.run(replace_validated(cfg, ap="coco", out=str(tmp_path / "coco")))
    assert coco["metrics"]["score"] == coco["metrics"]["AP50"]
