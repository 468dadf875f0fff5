"""Krähenbühl et al.'s VOC 2007 fine-tuning protocol: fc6/fc7 head, crops, 10-crop testing, both APs."""

from __future__ import annotations

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
from cebench.transfer.data import ClassificationView, crop_images, default_resize
from cebench.transfer.encoders import MINUS_ONE_ONE
from cebench.transfer.metrics import voc07_mean_ap, voc_mean_ap

ALEX = "random:alexnet,width=0.125,conv1_kernel=5,conv1_stride=2,conv1_padding=2,norm=none"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    cfg = classify.paper_preset()
    assert classify.lr_milestones(cfg, 800) == [100, 200, 300, 400, 500, 600, 700]
    assert classify.lr_milestones(classify.ClassifyConfig(), 90) == [60]


def test_presets_and_validation():
    p = classify.paper_preset()
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
    for cfg in (classify.ClassifyConfig(), classify.small_preset()):
        assert (cfg.head, cfg.random_crop, cfg.test_crops, cfg.ap, cfg.rescale) == (
            "linear",
            False,
            1,
            "area",
            "none",
        )
        assert cfg.lr_step_fraction is None and (cfg.train_split, cfg.val_split) == ("train", "val")
    for key, bad in [("test_crops", 5), ("ap", "11pt"), ("head", "mlp"), ("fc_dropout", 1.0)]:
        with pytest.raises(ConfigError, match=key):
            classify.small_preset(**{key: bad})


def test_paper_protocol_end_to_end(synth, tmp_path):
    cfg = classify.paper_preset(
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
