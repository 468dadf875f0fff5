"""An encoder that carries trained fc6/fc7 (torchvision's AlexNet) hands them to the heads that
keep them in the paper's protocols: classification fc6/fc7 (voc-classification redraws only fc8),
Fast R-CNN's box head, FCN's convolutionalised fc6 (6x6) and fc7 (1x1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.pretrain.encoder_file import save_encoder
from cebench.pretrain.models import build_encoder
from cebench.transfer import classify, detect, segment
from cebench.transfer.encoders import resolve_encoder
from cebench.transfer.harness import Splits
from cebench.transfer.heads import init_fc_head_
from cebench.transfer.tasks import preset_config


@pytest.fixture(scope="module")
def hub_alexnet(tmp_path_factory):
    """torchvision's AlexNet state dict (its own random init: no download) in a fake hub cache."""
    import torchvision

    home = tmp_path_factory.mktemp("torch-home")
    torch.manual_seed(0)
    state = torchvision.models.alexnet(num_classes=3).state_dict()
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    return home, state


def _resolve(hub_alexnet, monkeypatch, spec="hub:torchvision/alexnet"):
    home, state = hub_alexnet
    monkeypatch.setenv("TORCH_HOME", str(home))
    enc, info = resolve_encoder(spec)
    w6, b6 = state["classifier.1.weight"], state["classifier.1.bias"]
    w7, b7 = state["classifier.4.weight"], state["classifier.4.bias"]
    return enc, info, (w6, b6, w7, b7)


class _Train:
    """What the harnesses' build reads of a training view."""

    classes = ["a", "b", "c"]
    indices = [0, 1]
    crop, resize_size = "none", None

    def targets(self) -> torch.Tensor:
        return torch.tensor([0, 1])


def test_classification_keeps_trained_fc6_fc7_and_redraws_fc8(hub_alexnet, monkeypatch):
    enc, info, (w6, b6, w7, b7) = _resolve(hub_alexnet, monkeypatch)
    assert len(enc.trained_fc) == 2 and torch.equal(enc.trained_fc[0][0], w6)
    assert enc.state_dict().keys() == {  # not part of the encoder's weights
        f"stages.conv{i}.0.{p}" for i in range(1, 6) for p in ("weight", "bias")
    }
    cfg = preset_config("classify", "paper", encoder="hub:torchvision/alexnet", rescale="none")
    model = classify.build_finetune_model(
        cfg, enc, info, _Train(), _Train(), torch.device("cpu"), None
    )
    fc6, fc7 = (m for m in model.neck if isinstance(m, nn.Linear))
    assert torch.equal(fc6.weight, w6) and torch.equal(fc6.bias, b6)
    assert torch.equal(fc7.weight, w7) and torch.equal(fc7.bias, b7)
    assert info.meta["fc6_fc7"] == "trained"
    # the same weights from a file anywhere carry them too
    path = hub_alexnet[0] / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    other, _ = resolve_encoder(f"hub:torchvision/alexnet,file={path}")
    assert torch.equal(other.trained_fc[1][0], w7) and torch.equal(other.trained_fc[1][1], b7)
    # fc8 is voc-classification's fresh draw: N(0, 0.01^2), bias 0.1
    assert model.head.weight.shape == (3, 4096) and torch.all(model.head.bias == 0.1)
    assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_rescaling_skips_the_trained_layers_within_and_moves_them_between(tmp_path):
    # a small trained encoder (a checkpoint) that carries trained fc6/fc7 of its own
    torch.manual_seed(1)
    kw = dict(width=0.25, conv1_kernel=5, conv1_stride=2, conv1_padding=2, norm="none")
    save_encoder(tmp_path / "e.pt", build_encoder("alexnet", input_size=48, **kw), "alexnet",
                 {"input_size": 48, **kw}, {"method": "x"})  # fmt: skip
    enc, info = resolve_encoder(str(tmp_path / "e.pt"))
    c, h, w = enc.output_shape()
    enc.trained_fc = [
        (torch.randn(16, c * h * w) * 0.1, torch.randn(16)),
        (torch.randn(16, 16), torch.randn(16)),
    ]
    conv1 = enc.stages["conv1"][0].weight.clone()
    model = classify.FinetuneModel(enc, 3, head="fc", fc_dims=16, input_size=48)
    fc = [m for m in model.neck if isinstance(m, nn.Linear)]
    images = torch.rand(8, 3, 48, 48) * 2 - 1
    init_fc_head_(model, enc, info, fc, model.features, "full", 0, lambda size: images)
    assert info.meta["fc6_fc7"] == "trained"
    record = info.meta["rescale"]
    assert (record["within_layers"], record["trained_layers"]) == (0, 7)  # conv1-5, fc6, fc7
    assert record["between"]["layers"] == 7 and record["between"]["iterations"] >= 1
    # the between-layer step scales whole layers: each weight is its trained one times a factor
    for new, old in ((fc[0].weight, enc.trained_fc[0][0]), (enc.stages["conv1"][0].weight, conv1)):
        factor = (new.abs().sum() / old.abs().sum()).item()
        assert factor != pytest.approx(1.0, abs=1e-3)
        assert torch.allclose(new, old * factor, rtol=1e-4, atol=1e-7)


def test_detection_box_head_gets_trained_fc6_fc7(hub_alexnet, monkeypatch):
    enc, info, (w6, b6, w7, b7) = _resolve(hub_alexnet, monkeypatch)
    cfg = preset_config("detect", "paper", encoder="hub:torchvision/alexnet", rescale="none")
    data = Splits(_Train(), None)
    model = detect.Detect().build(cfg, enc, info, data, torch.device("cpu"))
    head = model.roi_heads.box_head
    assert torch.equal(head.fc6.weight, w6) and torch.equal(head.fc6.bias, b6)
    assert torch.equal(head.fc7.weight, w7) and torch.equal(head.fc7.bias, b7)
    # keep_trained_fc=false: always the fresh draw
    cfg = preset_config("detect", "paper", encoder="x", rescale="none", keep_trained_fc=False)
    head = detect.Detect().build(cfg, enc, info, data, torch.device("cpu")).roi_heads.box_head
    assert info.meta["fc6_fc7"] == "fresh" and torch.all(head.fc6.bias == 0.1)


def test_fcn_gets_trained_fc6_fc7_as_6x6_and_1x1_kernels(hub_alexnet, monkeypatch):
    enc, info, (w6, b6, w7, b7) = _resolve(hub_alexnet, monkeypatch)
    cfg = preset_config("segment", "paper", encoder="hub:torchvision/alexnet", rescale="none")
    model = segment.Segment().build(cfg, enc, info, Splits(_Train(), None), torch.device("cpu"))
    fc6, fc7 = model.fc.fc6, model.fc.fc7
    assert fc6.weight.shape == (4096, 256, 6, 6) and fc7.weight.shape == (4096, 4096, 1, 1)
    assert torch.equal(fc6.weight, w6.view(4096, 256, 6, 6)) and torch.equal(fc6.bias, b6)
    assert torch.equal(fc7.weight[:, :, 0, 0], w7) and torch.equal(fc7.bias, b7)
    # FCN's fc6 on pool5 computes torchvision's fc6 on the flattened pool5 (the centre position)
    model.eval()
    with torch.no_grad():
        pool5 = torch.randn(1, 256, 6, 6)
        conv = nn.functional.conv2d(pool5, fc6.weight, fc6.bias)
        assert torch.allclose(conv[0, :, 0, 0], w6 @ pool5.flatten() + b6, atol=1e-4)


def test_heads_that_do_not_fit_stay_fresh(hub_alexnet, monkeypatch):
    enc, info, _ = _resolve(hub_alexnet, monkeypatch)
    model = classify.FinetuneModel(enc, 3, head="fc", fc_dims=16, input_size=227)
    fc = [m for m in model.neck if isinstance(m, nn.Linear)]
    init_fc_head_(model, enc, info, fc, model.features, "none", 0, None)
    assert info.meta["fc6_fc7"] == "fresh" and torch.all(fc[0].bias == 0.1)
    # an encoder without trained fc layers (a random one) leaves the fresh draw too
    rnd, rinfo = resolve_encoder("random:tiny", input_size=32)
    assert rnd.trained_fc == []
    cfg = preset_config("segment", "paper", encoder="random:tiny", rescale="none", fc_dims=8, fc_kernel=2)
    m = segment.Segment().build(cfg, rnd, rinfo, Splits(_Train(), None), torch.device("cpu"))
    assert rinfo.meta["fc6_fc7"] == "fresh"
    assert m.fc.fc6.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert torch.all(m.fc.fc6.bias == 0.1)
