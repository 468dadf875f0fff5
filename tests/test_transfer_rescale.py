"""Data-dependent rescaling (Krähenbühl et al. 2016) of any encoder: within- and between-layer steps."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.encoder_file import save_encoder
from cebench.pretrain.models import build_encoder
from cebench.transfer.args import HarnessConfig, common_parser, config_from_args
from cebench.transfer.encoders import (
    IMAGENET,
    layer_change_rates,
    renormalize,
    resolve_encoder,
)

# ReLU + max pooling, no LRN / BatchNorm: positively homogeneous, with biases
ALEX = dict(width=0.25, conv1_kernel=5, conv1_stride=2, conv1_padding=2, norm="none")
SPEC = "random:alexnet," + ",".join(f"{k}={v}" for k, v in ALEX.items())


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(n=16, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1).clamp(-1, 1)


def _checkpoint(tmp_path, seed=1):
    torch.manual_seed(seed)
    enc = build_encoder("alexnet", input_size=48, **ALEX)  # torch's default init: "pretrained"
    save_encoder(
        tmp_path / "encoder.pt", enc, "alexnet", {"input_size": 48, **ALEX}, {"method": "x"}
    )
    return str(tmp_path / "encoder.pt")


def _pre_activations(enc, images):
    outs = {}
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    # clone: the in-place ReLU that follows overwrites the conv output
    hooks = [c.register_forward_hook(lambda m, i, o: outs.__setitem__(m, o.clone())) for c in convs]
    enc.eval()
    with torch.no_grad():
        enc(images)
    for h in hooks:
        h.remove()
    return [outs[c] for c in convs]


def test_within_on_a_checkpoint_gives_zero_mean_unit_std_channels(tmp_path):
    path, images = _checkpoint(tmp_path), _images()
    plain, info0 = resolve_encoder(path, calibration_images=images)
    enc, info = resolve_encoder(path, calibration_images=images, rescale="within")
    assert info0["meta"]["rescale"] == {"mode": "none"}
    assert info["meta"]["rescale"] == {"mode": "within", "calibration_images": 16}
    assert info["hash"] != info0["hash"]  # the feature cache sees the new weights
    for o in _pre_activations(enc, images):
        assert torch.allclose(o.std(dim=(0, 2, 3)), torch.ones(o.shape[1]), atol=1e-3)
        assert o.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    # the old behaviour (nothing applied to a checkpoint) does not have the property
    stds = torch.cat([o.std(dim=(0, 2, 3)) for o in _pre_activations(plain, images)])
    assert (stds - 1).abs().max() > 0.1


def test_full_equalises_the_change_rates_and_keeps_the_function(tmp_path):
    path, images = _checkpoint(tmp_path), _images()
    within, _ = resolve_encoder(path, calibration_images=images, rescale="within")
    full, info = resolve_encoder(path, calibration_images=images, rescale="full")

    def spread(enc):
        rates = layer_change_rates(enc, images, draws=8, generator=torch.Generator().manual_seed(9))
        assert len(rates) == 5  # conv1..conv5
        return max(rates) / min(rates)

    assert spread(within) > 3.0
    assert spread(full) < 1.35
    between = info["meta"]["rescale"]["between"]
    assert between["layers"] == 5 and between["iterations"] >= 1
    assert between["spread_before"] > 3.0 > 1.35 > between["spread_after"]
    # every factor set keeps a homogeneous network's output (their product is 1, biases follow)
    within.eval(), full.eval()
    with torch.no_grad():
        a, b = within(images), full(images)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * a.abs().max().item())
    # ... while the weights did change
    wa = [m.weight for m in within.modules() if isinstance(m, nn.Conv2d)]
    wb = [m.weight for m in full.modules() if isinstance(m, nn.Conv2d)]
    assert max((x.norm() / y.norm() - 1).abs().item() for x, y in zip(wa, wb, strict=True)) > 0.05


def test_change_rate_of_a_linear_layer_by_hand():
    # l = sum_i <z_i, W x_i>, z ~ N(0, 1): E||dl/dW||^2 = d_out * sum_i ||x_i||^2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g)
    layer = nn.Linear(3, 4, bias=False)
    [rate] = layer_change_rates(layer, x, draws=4000, generator=g)
    expected = 4 * x.pow(2).sum().item() / layer.weight.pow(2).sum().item()
    assert rate == pytest.approx(expected, rel=0.06)


def test_random_rescaled_keeps_its_meaning():
    images = _images()
    a, info = resolve_encoder("random-rescaled:" + SPEC[7:], calibration_images=images)
    b, _ = resolve_encoder(SPEC, calibration_images=images, rescale="within")
    c, info_c = resolve_encoder(
        "random-rescaled:" + SPEC[7:], calibration_images=images, rescale="full"
    )
    assert info["meta"]["rescale"]["mode"] == "within" and info["meta"]["calibration_images"] == 16
    assert info_c["meta"]["rescale"]["mode"] == "full"
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_calibration_is_renormalised_to_the_encoder_statistics():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    y = renormalize(x, IMAGENET)
    for c in range(3):
        m, s = IMAGENET["mean"][c], IMAGENET["std"][c]
        assert torch.allclose(y[0, c, 0], torch.tensor([(0 - m) / s, (0.5 - m) / s, (1 - m) / s]))


def test_rescale_option_and_errors(tmp_path):
    p = common_parser()
    args = p.parse_args(["--encoder", "random:tiny", "--out", "o", "--rescale", "full"])
    cfg = config_from_args(HarnessConfig, args, {})
    assert cfg.rescale == "full" and HarnessConfig().rescale == "none"
    with pytest.raises(SystemExit):
        p.parse_args(["--encoder", "x", "--out", "o", "--rescale", "half"])
    with pytest.raises(ConfigError, match="rescale"):
        HarnessConfig(rescale="half").validate()
    with pytest.raises(ConfigError, match="rescale"):
        resolve_encoder(SPEC, rescale="half")
    with pytest.raises(ConfigError, match="needs a batch of training images"):
        resolve_encoder(_checkpoint(tmp_path), rescale="within")
    assert isinstance(args, argparse.Namespace)
