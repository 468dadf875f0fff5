"""Fast R-CNN's proposals and solver in the detection paper preset: selective search boxes
computed once per image and cached, RoI heads on fixed proposals (no RPN), conv1 at lr 0 and
biases at lr x2 without weight decay."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from cebench.data import VOCDetection
from cebench.data.synth import generate
from cebench.transfer import detect
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.harness import Splits
from cebench.transfer.loop import make_optimizer, param_groups
from cebench.transfer.proposals import ProposalCache, selective_search
from cebench.transfer.tasks import preset_config

TINY = "random:tiny,width=8,depth=5"



def _image(path, seed=0):
    a = np.zeros((40, 56, 3), np.uint8)
    a[5:25, 4:24] = (220, 30, 30)
    a[18:36, 28:52] = (20, 90, 210)
    a += np.random.default_rng(seed).integers(0, 20, a.shape, dtype=np.uint8)
    Image.fromarray(a).save(path)
    return Image.open(path).convert("RGB")


def test_proposal_cache_computes_once_then_hits_across_instances(tmp_path):
    img = _image(tmp_path / "a.png")
    direct = selective_search(img, "fast", 50)
    assert direct.dtype == np.float32 and direct.shape[1] == 4 and 1 <= len(direct) <= 50
    assert (direct[:, 2] > direct[:, 0]).all() and (direct[:, 2] <= 56).all()
    assert len(np.unique(direct, axis=0)) == len(direct)  # duplicates removed
    folder = tmp_path / "cache"
    first = ProposalCache(folder, "fast", 50)
    boxes = first.boxes(tmp_path / "a.png", img)
    assert (first.computed, first.hits) == (1, 0)
    entries = list(folder.rglob("*.npy"))
    assert len(entries) == 1 and not list(folder.rglob("*.tmp"))  # written whole, no leftovers
    again = first.boxes(tmp_path / "a.png", img)
    assert (first.computed, first.hits) == (1, 1)
    np.testing.assert_array_equal(again, boxes)
    # another run (a new cache object on the same folder) reuses it; poison the entry to prove
    # the boxes come from the file and not a recomputation
    np.save(entries[0], np.array([[1, 2, 3, 4]], np.float32))
    other = ProposalCache(folder, "fast", 50)
    np.testing.assert_array_equal(other.boxes(tmp_path / "a.png"), [[1, 2, 3, 4]])
    assert (other.computed, other.hits) == (0, 1)
    # other settings or a changed file: computed again
    fewer = ProposalCache(folder, "fast", 2)
    assert len(fewer.boxes(tmp_path / "a.png", img)) == min(2, len(direct))
    assert fewer.computed == 1
    st = os.stat(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert other.boxes(tmp_path / "a.png", img).shape[1] == 4 and other.computed == 1
    nocache = ProposalCache(None, "fast", 50)
    nocache.boxes(tmp_path / "a.png", img)
    nocache.boxes(tmp_path / "a.png", img)
    assert (nocache.computed, nocache.hits) == (2, 0)


def _fast_rcnn(num_classes=3, **over):
    enc, info = resolve_encoder(TINY, input_size=32)
    cfg = preset_config("detect", "paper", 
        encoder=TINY,
        input_size=32,
        min_size=48,
        max_size=64,
        representation_size=16,
        **over,
    )
    return detect.build_detector(enc, num_classes, 32, cfg, info["normalize"]), cfg


def test_fast_rcnn_trains_and_detects_on_the_given_proposals_without_an_rpn():
    torch.manual_seed(0)
    model, cfg = _fast_rcnn()
    assert cfg.proposals == "selective-search"
    assert isinstance(model, detect.FastRCNN) and not hasattr(model, "rpn")
    images = [torch.rand(3, 40, 56), torch.rand(3, 30, 60)]
    targets = [
        {"boxes": torch.tensor([[4.0, 5, 24, 25]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 2, 50, 28]]), "labels": torch.tensor([2])},
    ]
    proposals = [
        torch.tensor([[3.0, 4, 22, 26], [28, 18, 52, 36], [0, 0, 56, 40]]),
        torch.tensor([[8.0, 1, 45, 29], [1, 1, 20, 20]]),
    ]
    model.train()
    losses = model(images, targets, proposals=proposals)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}  # no RPN losses
    sum(losses.values()).backward()
    # evaluation: no box regression and class 1 certain -> the detections ARE the proposals,
    # back in each image's own pixels (the transform's scaling undone)
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 20.0, 0.0, 0.0]))
    model.eval()
    with torch.no_grad():
        out = model(images, proposals=proposals)
    for o, p in zip(out, proposals, strict=True):
        assert (o["labels"] == 1).all()
        got = sorted(map(tuple, o["boxes"].round(decimals=3).tolist()))
        assert got == sorted(map(tuple, p.tolist()))
    with pytest.raises(ValueError, match="proposals"):
        model(images)


class _Log:
    def __init__(self):
        self.rows = []

    def update(self, step, **m):
        self.rows.append(step)


def test_fit_leaves_conv1_untouched_and_gives_biases_twice_the_lr(tmp_path):
    root = tmp_path / "data"
    generate(root, size=48, images=6, unlabelled=0, folder_images=12, workers=1)
    voc = root / "VOC"
    train = VOCDetection(voc, "train")
    torch.manual_seed(0)
    model, cfg = _fast_rcnn(
        len(train.classes),
        data=str(voc),
        out=str(tmp_path / "det"),
        epochs=1,
        batch_size=3,
        lr=0.05,
        ss_max_proposals=20,
    )
    assert (cfg.freeze_stages, cfg.bias_lr, cfg.bias_decay) == ("conv1", 2.0, False)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    stats = {
        k: v.clone()
        for k, v in model.named_buffers()
        if ".stages.conv1." in k and "running_" in k
    }
    assert any("running_mean" in k for k in stats)  # the tiny encoder's conv1 has a BatchNorm
    detect.Detect().fit(cfg, model, Splits(train, train, "voc"), None, torch.device("cpu"), _Log())
    # train mode did not move the frozen stage's BatchNorm statistics (FrozenBatchNorm2d now)
    after_stats = dict(model.named_buffers())
    assert all(torch.equal(stats[k], after_stats[k]) for k in stats)
    # (the frozen BatchNorm's weight and bias are buffers now)
    after = {**after_stats, **dict(model.named_parameters())}
    conv1 = [k for k in before if ".stages.conv1." in k]
    assert conv1 and all(torch.equal(before[k], after[k]) for k in conv1)
    assert not any(after[k].requires_grad for k in conv1)
    conv2 = [k for k in before if ".stages.conv2." in k and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in conv2)
    # the proposals were computed once per training image and cached beside the run
    assert len(list((tmp_path / "proposal-cache").rglob("*.npy"))) == len(train)
    # the optimizer the fit builds: weights at lr with decay, biases at 2 lr without, no conv1
    prefixes = detect.frozen_prefixes(model, cfg.freeze_stages)
    assert prefixes == ["backbone.encoder.stages.conv1."]
    opt = make_optimizer(
        param_groups(model, cfg.weight_decay, cfg.bias_lr, cfg.bias_decay, frozen=prefixes),
        cfg.optimizer,
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
    )
    lrs = [(g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert lrs == [(0.05, 5e-4), (0.1, 0.0)]
    names = {id(p): k for k, p in model.named_parameters()}
    biases = [names[id(p)] for p in opt.param_groups[1]["params"]]
    assert biases and all(n.endswith("bias") for n in biases)
    grouped = {names[id(p)] for g in opt.param_groups for p in g["params"]}
    assert not grouped & set(conv1)
    with pytest.raises(Exception, match="freeze_stages"):
        detect.frozen_prefixes(model, "conv9")
