"""Segmentation as the paper ran it: FCN-32s with convolutional fc6/fc7, mean IU scored at each
image's original resolution (logits upsampled before the argmax), a paper-style end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cebench.core.logger import read_jsonl
from cebench.data.synth import generate
from cebench.transfer import segment
from cebench.transfer.data import seeded_loader
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.tasks import preset_config

NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}
TINY = "random:tiny,width=8,depth=5"



def _thin_structures():
    """Two images of different sizes, each with a 1 px line of its own class that nearest
    resizing to 16 px misses (column 10 of 64, row 21 of 40), and an ignored (255) band."""
    rng = np.random.default_rng(0)
    a = np.zeros((64, 64), dtype=np.int64)
    a[:, 10] = 1
    b = np.zeros((40, 72), dtype=np.int64)
    b[21, :] = 2
    b[:, :5] = 255
    items = []
    for mask in (a, b):
        pixels = rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)
        pixels[mask == 1] = 255
        items.append((Image.fromarray(pixels), torch.from_numpy(mask)))
    return items


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Constant(nn.Module):
    """Background everywhere."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        out[:, 0] = 1.0
        return out


def _score(model, items, original: bool, size: int = 16):
    view = segment.SegmentationView(_Items(items), size, NORM, False, original_masks=original)
    collate = segment.images_and_masks if original else None
    loader = seeded_loader(view, 2, False, 0, 0, collate)
    return segment.evaluate(model, loader, 3, torch.device("cpu"))


def _naive(model, items, size: int = 16):
    """Per-pixel loops: each image's logits upsampled to its own size, every labelled pixel counted."""
    view = segment.SegmentationView(_Items(items), size, NORM, False, original_masks=True)
    tp, fp, fn = [0] * 3, [0] * 3, [0] * 3
    correct = labelled = 0
    with torch.no_grad():
        for i in range(len(view)):
            x, mask = view[i]
            logits = F.interpolate(
                model(x[None]), size=mask.shape, mode="bilinear", align_corners=False
            )[0]
            for r in range(mask.shape[0]):
                for c in range(mask.shape[1]):
                    g = int(mask[r, c])
                    if g == 255:
                        continue
                    p = int(logits[:, r, c].argmax())
                    labelled += 1
                    correct += p == g
                    if p == g:
                        tp[g] += 1
                    else:
                        fp[p] += 1
                        fn[g] += 1
    ious = [tp[k] / (tp[k] + fp[k] + fn[k]) for k in range(3) if tp[k] + fp[k] + fn[k]]
    return 100 * sum(ious) / len(ious), 100 * correct / labelled


def test_original_size_scoring_sees_thin_structures_input_size_scoring_loses():
    items = _thin_structures()
    n1, n2 = 64, 72
    n0 = 64 * 64 - n1 + 40 * 67 - (n2 - 5)
    original = _score(_Constant(), items, original=True)
    # background IU n0 / (n0 + missed line pixels); both line classes IU 0
    assert original["mIoU"] == pytest.approx(100 * n0 / (n0 + n1 + n2 - 5) / 3)
    # at 16 px the nearest-resized masks lose both lines: a perfect (and wrong) 100
    assert _score(_Constant(), items, original=False)["mIoU"] == pytest.approx(100.0)


def test_original_size_scoring_equals_a_naive_per_pixel_computation():
    items = _thin_structures()
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)
    got = _score(model, items, original=True)
    miou, acc = _naive(model, items)
    assert got["mIoU"] == pytest.approx(miou) and got["pixel_acc"] == pytest.approx(acc)
    assert got["mIoU"] != pytest.approx(_score(model, items, original=False)["mIoU"])


def test_fcn32s_head_has_conv_fc6_fc7_and_zero_scores():
    enc, _ = resolve_encoder(TINY, input_size=32)
    fcn = segment.FCN(enc, 4, 32, 0, False, fc_dims=16, fc_kernel=3, fc_dropout=0.25)
    assert fcn.stages == ["conv5"] and fcn.fc is not None
    assert fcn.fc.fc6.kernel_size == (3, 3) and fcn.fc.fc6.out_channels == 16
    assert fcn.fc.fc6.in_channels == enc.feature_info[-1].channels
    assert fcn.fc.fc7.kernel_size == (1, 1) and fcn.fc.fc7.out_channels == 16
    assert [m.p for m in fcn.fc.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    score = fcn.scores["conv5"]
    assert score.in_channels == 16 and not score.weight.any() and not score.bias.any()
    x = torch.rand(2, 3, 32, 32)
    assert fcn(x).shape == (2, 4, 32, 32)
    even = segment.FCN(enc, 4, 64, 0, False, fc_dims=8, fc_kernel=6)  # AlexNet's 6x6 fc6
    top = enc.forward_features(torch.rand(1, 3, 64, 64))["conv5"]
    assert even.fc(top).shape[-2:] == top.shape[-2:]  # zero padding keeps the grid
    plain = segment.FCN(enc, 4, 32, 0, False)
    assert plain.fc is None and plain.scores["conv5"].in_channels == enc.num_features
    paper = preset_config("segment", "paper")
    assert (paper.fc_dims, paper.skips, paper.eval_size, paper.fc_dropout) == (
        4096,
        0,
        "original",
        0.5,
    )
    assert (paper.train_split, paper.val_split, paper.lr_schedule) == (
        "train",
        "seg11valid",
        "constant",
    )


def test_paper_style_run_end_to_end(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-paper") / "data"
    generate(root, size=48, images=12, unlabelled=0, folder_images=12, workers=1)
    out = tmp_path_factory.mktemp("seg-paper-out")
    cfg = preset_config("segment", "paper", 
        encoder=TINY,
        data=str(root),
        out=str(out),
        device="cpu",
        input_size=32,
        fc_dims=16,
        fc_kernel=3,
        batch_size=4,
        epochs=2,
        # VOC train -> val with squashed inputs (the SBD / full-size protocol has its own test)
        train_data="voc",
        val_split="val",
        input_mode="resize",
        input_pad=0,
        loss_reduction="mean",
        steps=0,
        lr=1e-3,
    )
    record = segment.run(cfg)
    m = record["metrics"]
    assert record["encoder"]["meta"]["rescale"]["mode"] == "full"  # Krähenbühl et al. first
    assert m["eval_size"] == "original" and m["stages"] == ["conv5"]
    assert 0 <= m["mIoU"] <= 100 and m["score"] == m["mIoU"]
    assert [r["lr"] for r in read_jsonl(out / "log.jsonl")] == [1e-3, 1e-3]  # FCN's fixed rate
