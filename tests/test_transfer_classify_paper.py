"""Krähenbühl et al.'s VOC 2007 fine-tuning protocol: fc6/fc7 head, crops, 10-crop testing, both APs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as TF

from cebench.core.errors import ConfigError
from cebench.data.synth import generate
from cebench.pretrain.models import build_encoder
from cebench.transfer import classify
from cebench.transfer.data import ClassificationView, crop_images, default_resize, random_crop
from cebench.transfer.encoders import MINUS_ONE_ONE
from cebench.transfer.loop import bias_lr_groups, make_optimizer, train_one_epoch
from cebench.transfer.metrics import voc07_mean_ap, voc_mean_ap
from cebench.transfer.tasks import preset_config

ALEX = "random:alexnet,width=0.125,conv1_kernel=5,conv1_stride=2,conv1_padding=2,norm=none"



@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_cls") / "data"
    generate(root, size=32, images=16, unlabelled=0, folder_images=60, workers=1)
    return root


def _alexnet(size=32):
    return build_encoder(
        "alexnet", input_size=size, width=0.25, conv1_kernel=5, conv1_stride=2, conv1_padding=2
    )


def test_fc_head_on_flattened_pool5():
    torch.manual_seed(0)
    enc = _alexnet(48)
    c, h, w = enc.output_shape()
    assert h * w > 1  # so pooling and flattening differ
    model = classify.FinetuneModel(enc, 7, head="fc", fc_dims=24, fc_dropout=0.3, input_size=48)
    fc = [m for m in model.neck if isinstance(m, nn.Linear)]
    drops = [m for m in model.neck if isinstance(m, nn.Dropout)]
    assert [(m.in_features, m.out_features) for m in fc] == [(c * h * w, 24), (24, 24)]
    assert [d.p for d in drops] == [0.3, 0.3]
    assert (model.head.in_features, model.head.out_features) == (24, 7)
    # freshly drawn: N(0, 0.01^2), biases 0.1, not shared between two builds
    assert fc[0].weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.all(fc[0].bias == 0.1) and torch.all(fc[1].bias == 0.1)
    other = classify.FinetuneModel(enc, 7, head="fc", fc_dims=24, input_size=48)
    assert not torch.equal(other.neck[1].weight, fc[0].weight)
    # eval forward = fc7(relu(fc6(flatten(pool5)))) by hand
    x = torch.randn(2, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        f = enc(x).flatten(1)
        ref = torch.relu(fc[1](torch.relu(fc[0](f))))
        assert torch.allclose(model.features(x), ref, atol=1e-6)
        assert model(x).shape == (2, 7)
    # train mode drops units
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model.features(x), ref)
    # the default head is today's: linear on the globally pooled last stage
    lin = classify.FinetuneModel(enc, 7)
    assert lin.head.in_features == c and isinstance(lin.neck, classify.GlobalPool)


def _image(size=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8))


def test_ten_crops_are_corners_centre_and_flips_and_scores_average(synth):
    base = classify.classification_splits(synth / "VOC", "voc", "train", "val", 32, MINUS_ONE_ONE)[
        1
    ].base
    view = ClassificationView(base, 32, MINUS_ONE_ONE, False, crop="ten", resize_size=40)
    x, _ = view[0]
    assert x.shape == (10, 3, 32, 32)
    from cebench.data import load_rgb

    big = TF.resize(load_rgb(view.image_path(0)), [40, 40], antialias=True)
    boxes = [(0, 0), (8, 0), (0, 8), (8, 8), (4, 4)]  # (left, top): tl, tr, bl, br, centre
    naive = []
    for img in (big, big.transpose(Image.FLIP_LEFT_RIGHT)):  # then the same boxes, flipped
        for left, top in boxes:
            crop = img.crop((left, top, left + 32, top + 32))
            naive.append(TF.normalize(TF.to_tensor(crop), [0.5] * 3, [0.5] * 3))
    assert torch.allclose(x, torch.stack(naive), atol=1e-6)
    torch.manual_seed(0)
    model = classify.FinetuneModel(_alexnet(), 3).eval()
    with torch.no_grad():
        per_crop = torch.stack([model(c[None])[0] for c in x])
        got = classify.predict_logits(model, x[None])[0]
    assert torch.allclose(got, per_crop.mean(0), atol=1e-5)
    assert not torch.allclose(got, per_crop[4], atol=1e-5)  # not just the centre crop


def test_random_crops_are_windows_of_the_resized_image():
    img = _image()
    plain = TF.to_tensor(crop_images(img, 32, "none")[0])
    big = TF.to_tensor(TF.resize(img, [default_resize(32)] * 2, antialias=True))
    assert default_resize(227) == 256 and default_resize(32) == 36
    seen = set()
    for _ in range(12):
        c = TF.to_tensor(crop_images(img, 32, "random")[0])
        assert c.shape == plain.shape and not torch.allclose(c, plain)
        windows = {
            (top, left, flip): big[:, top : top + 32, left : left + 32]
            for top in range(5)
            for left in range(5)
            for flip in (False, True)
        }
        hits = [k for k, w in windows.items() if torch.equal(c, w.flip(-1) if k[2] else w)]
        assert hits, "a random crop is a (flipped) window of the resized image"
        seen.add(hits[0])
    assert len(seen) > 3  # positions and flips vary
    centre = TF.to_tensor(crop_images(img, 32, "center")[0])
    assert torch.equal(centre, big[:, 2:34, 2:34])
    with pytest.raises(ConfigError, match="resize_size"):
        crop_images(img, 32, "random", resize_size=30)


class _Rng:
    """A random.Random stand-in that returns given values: uniform -> s, randint -> its list."""

    def __init__(self, s, ints, flip=0.9):
        self.s, self.ints, self.flip = s, list(ints), flip

    def uniform(self, a, b):
        assert (a, b) == (0.5, 2.0)
        return self.s

    def randint(self, a, b):
        v = self.ints.pop(0)
        assert a <= v <= b
        return v

    def random(self):
        return self.flip


def test_scale_jitter_scales_then_crops_and_pads_with_the_mean():
    img = _image()
    # s = 2: the image resized to 2 x 36 = 72 px, the window at (top 5, left 9)
    c = crop_images(img, 32, "random", rng=_Rng(2.0, [5, 9]), scale=(0.5, 2.0))[0]
    big = TF.resize(img, [72, 72], antialias=True)
    assert torch.equal(TF.to_tensor(c), TF.to_tensor(big)[:, 5:37, 9:41])
    # s = 0.5: 18 px, smaller than the 32 px window: pasted at (x 3, y 7) on a mean-coloured
    # canvas, then the only window (0, 0); flipped (random() < 0.5)
    red = Image.new("RGB", (40, 46), (200, 0, 0))
    c = crop_images(red, 32, "random", rng=_Rng(0.5, [3, 7, 0, 0], 0.1), scale=(0.5, 2.0),
                    fill=(128, 128, 128))[0]  # fmt: skip
    a = np.asarray(c)
    inside = np.zeros((32, 32), bool)
    inside[7:25, 32 - 3 - 18 : 32 - 3] = True  # flipped left-right
    assert (a[inside] == (200, 0, 0)).all() and (a[~inside] == (128, 128, 128)).all()


def test_random_test_crops_are_ten_seeded_random_crops(synth):
    base = classify.classification_splits(synth / "VOC", "voc", "train", "val", 32, MINUS_ONE_ONE)[
        1
    ].base
    kw = dict(crop="random-ten", resize_size=40, scale=(0.5, 2.0))
    view = ClassificationView(base, 32, MINUS_ONE_ONE, False, **kw)
    x, _ = view[0]
    assert x.shape == (10, 3, 32, 32)
    assert torch.equal(x, view[0][0])  # the same crops in every evaluation
    assert len({c.sum().item() for c in x}) == 10  # ten different crops
    fixed = ClassificationView(base, 32, MINUS_ONE_ONE, False, crop="ten", resize_size=40)[0][0]
    assert not torch.equal(x, fixed)
    other = ClassificationView(base, 32, MINUS_ONE_ONE, False, seed=1, **kw)[0][0]
    assert not torch.equal(x, other)
    # the same crops as ten `random_crop` draws from the (seed, index) generator, by hand
    from cebench.data import load_rgb

    rng = random.Random(0 * 1_000_003 + 0)
    img = load_rgb(view.image_path(0))
    naive = [random_crop(img, 32, 40, rng, (0.5, 2.0), (128, 128, 128)) for _ in range(10)]
    norm = [TF.normalize(TF.to_tensor(c), [0.5] * 3, [0.5] * 3) for c in naive]
    assert torch.allclose(x, torch.stack(norm), atol=1e-6)


def test_gradient_clipping_and_doubled_bias_lr_by_hand():
    # one SGD step (lr 0.1, no momentum / decay) on l = 100 * (w . x + b): grad w = 100 x,
    # grad b = 100; ||g|| = 100 * sqrt(|x|^2 + 1) = 100 * sqrt(11) with x = (1, 3)
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.zero_(), layer.bias.zero_()
    x = torch.tensor([[1.0, 3.0]])
    opt = make_optimizer(bias_lr_groups(layer, 2.0), "sgd", 0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    train_one_epoch(layer, [x], lambda m, b, d: 100 * m(b).sum(), opt, torch.device("cpu"),
                    clip_grad_norm=10.0)  # fmt: skip
    k = 10.0 / (100 * 11**0.5)  # the clipping factor
    assert torch.allclose(layer.weight, -0.1 * k * 100 * x, atol=1e-6)
    assert layer.bias.item() == pytest.approx(-0.2 * k * 100, rel=1e-5)  # twice the lr


def test_sum_over_classes_bce_by_hand():
    logits = torch.zeros(2, 3)
    target = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])  # -1: difficult, left out
    assert classify.classification_loss(logits, target).item() == pytest.approx(math.log(2))
    got = classify.classification_loss(logits, target, "sum_classes").item()
    assert got == pytest.approx(5 * math.log(2) / 2)  # 5 labels, summed, / 2 images


def test_score_reports_both_aps():
    s = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.2, 0.4], [0.1, 0.2]])
    t = torch.tensor([[0, 1], [1, 0], [1, 1], [0, -1], [1, 0]], dtype=torch.float32)
    a = classify.score(s, t, "voc07")
    v07, area = voc07_mean_ap(s.numpy(), t.numpy()), voc_mean_ap(s.numpy(), t.numpy())
    assert a["mAP"] == a["mAP_voc07"] == v07[0] and a["mAP_area"] == area[0]
    assert a["per_class_AP_voc07"] == v07[1] and a["per_class_AP_area"] == area[1]
    assert a["mAP_voc07"] != a["mAP_area"]
    b = classify.score(s, t)
    assert b["mAP"] == area[0] and b["per_class_AP"] == area[1] and b["mAP_voc07"] == v07[0]


def test_lr_schedule():
    cfg = preset_config("classify", "paper")
    assert classify.lr_milestones(cfg, 800) == [100, 200, 300, 400, 500, 600, 700]
    assert classify.lr_milestones(classify.ClassifyConfig(), 90) == [60]


def test_presets_and_validation():
    p = preset_config("classify", "paper")
    assert (p.head, p.fc_dims, p.fc_dropout, p.random_crop, p.test_crops, p.ap, p.rescale) == (
        "fc",
        4096,
        0.5,
        True,
        10,
        "voc07",
        "full",
    )
    assert (p.train_split, p.val_split, p.optimizer, p.lr, p.lr_gamma) == (
        "trainval",
        "test",
        "sgd",
        0.001,
        0.5,
    )
    # voc-classification: scale 0.5-2, 10 random test crops, clip 10, bias lr x2, summed BCE
    assert (p.min_scale, p.max_scale, p.test_crop_mode) == (0.5, 2.0, "random")
    assert (p.clip_grad_norm, p.bias_lr_mult, p.bce_reduction) == (10.0, 2.0, "sum_classes")
    for cfg in (classify.ClassifyConfig(), preset_config("classify", "small")):
        assert (cfg.head, cfg.random_crop, cfg.test_crops, cfg.ap, cfg.rescale) == (
            "linear",
            False,
            1,
            "area",
            "none",
        )
        assert cfg.lr_step_fraction is None and (cfg.train_split, cfg.val_split) == ("train", "val")
        assert (cfg.min_scale, cfg.max_scale, cfg.test_crop_mode) == (1.0, 1.0, "fixed")
        assert (cfg.clip_grad_norm, cfg.bias_lr_mult, cfg.bce_reduction) == (0.0, 1.0, "mean")
    for key, bad in [
        ("test_crops", 5),
        ("ap", "11pt"),
        ("head", "mlp"),
        ("fc_dropout", 1.0),
        ("min_scale", 3.0),
        ("test_crop_mode", "grid"),
        ("clip_grad_norm", -1.0),
        ("bias_lr_mult", 0.0),
        ("bce_reduction", "sum"),
    ]:
        with pytest.raises(ConfigError, match=key):
            preset_config("classify", "small", **{key: bad})


def test_paper_protocol_end_to_end(synth, tmp_path):
    cfg = preset_config("classify", "paper", 
        encoder=ALEX,
        data=str(synth / "VOC"),
        out=str(tmp_path / "cls"),
        train_split="train",
        val_split="val",
        epochs=2,
        batch_size=4,
        fc_dims=32,
        calibration_images=8,
        device="cpu",
    )
    r = classify.run(cfg)
    m = r["metrics"]
    assert m["test_crops"] == 10 and m["head"] == "fc" and m["ap"] == "voc07"
    assert m["score"] == m["mAP"] == m["mAP_voc07"]
    assert 0 <= m["mAP_area"] <= 100 and len(m["per_class_AP_area"]) == len(m["per_class_AP"])
    rescale = r["encoder"]["meta"]["rescale"]
    assert rescale["mode"] == "full" and rescale["layers"] == "encoder, fc6, fc7"
    assert rescale["between"]["layers"] == 7  # conv1..conv5, fc6, fc7
    assert r["config"]["rescale"] == "full"
