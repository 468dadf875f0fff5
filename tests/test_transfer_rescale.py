"""Data-dependent rescaling (Krähenbühl et al. 2016) of any encoder: within- and between-layer steps."""

from __future__ import annotations

import argparse
import copy
import math

import pytest
import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.encoder_file import save_encoder
from cebench.pretrain.models import build_encoder
from cebench.transfer.args import HarnessConfig, common_keys, common_parser
from cebench.transfer.encoders import IMAGENET, renormalize, resolve_encoder
from cebench.transfer.rescale import between_layer_rescale_, layer_change_rates, rescale_
from cebench.transfer.tasks import config_from_args, get_args_parser

# ReLU + max pooling, no LRN / BatchNorm: positively homogeneous, with biases
ALEX = dict(width=0.25, conv1_kernel=5, conv1_stride=2, conv1_padding=2, norm="none")
SPEC = "random:alexnet," + ",".join(f"{k}={v}" for k, v in ALEX.items())



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


def test_within_leaves_a_trained_encoder_untouched(tmp_path):
    """magic_init initialises only the fresh (zero) layers of a loaded model and skips the rest."""
    path, images = _checkpoint(tmp_path), _images()
    plain, info0 = resolve_encoder(path, calibration_images=images)
    enc, info = resolve_encoder(path, calibration_images=images, rescale="within")
    assert info0["meta"]["rescale"] == {"mode": "none"}
    assert info["meta"]["rescale"] == {
        "mode": "within",
        "calibration_images": 16,
        "within_layers": 0,
        "trained_layers": 5,
    }
    for k, v in plain.state_dict().items():
        assert torch.equal(v, enc.state_dict()[k]), k
    assert info["hash"] == info0["hash"]


def test_within_on_a_random_encoder_gives_unit_std_channels_of_mean_point_one():
    images = _images()
    enc, info = resolve_encoder(SPEC, calibration_images=images, rescale="within")
    assert info["meta"]["rescale"]["within_layers"] == 5
    for o in _pre_activations(enc, images):
        std = o.transpose(0, 1).reshape(o.shape[1], -1).std(1, unbiased=False)
        assert torch.allclose(std, torch.ones(o.shape[1]), atol=1e-4)
        assert torch.allclose(o.mean(dim=(0, 2, 3)), torch.full((o.shape[1],), 0.1), atol=1e-4)


def test_within_step_by_hand_and_on_zero_layers():
    # one fresh linear unit, w = 2, b = 0, inputs 1..4: outputs 2, 4, 6, 8 (mean 5, population
    # std sqrt(5)); afterwards w = 2 / sqrt(5), b = -5 / sqrt(5) + 0.1
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(2.0), layer.bias.zero_()
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    rec = rescale_(layer, x, "within")
    assert rec["within_layers"] == 1 and rec["trained_layers"] == 0
    assert layer.weight.item() == pytest.approx(2 / 5**0.5, rel=1e-6)
    assert layer.bias.item() == pytest.approx(-(5**0.5) + 0.1, rel=1e-6)
    # zero layers (magic_init's fresh layers): drawn, then unit std and mean 0.1 per channel;
    # a trained layer in between keeps its weights
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        for i in (0, 4):
            net[i].weight.zero_(), net[i].bias.zero_()
    kept = net[2].weight.clone(), net[2].bias.clone()
    x = torch.randn(64, 3)
    rec = rescale_(net, x, "within", trained=[net[2]])
    assert rec["within_layers"] == 2 and rec["trained_layers"] == 1
    assert torch.equal(net[2].weight, kept[0]) and torch.equal(net[2].bias, kept[1])
    with torch.no_grad():
        for y in (net[0](x), net[:5](x)):
            assert torch.allclose(y.std(0, unbiased=False), torch.ones(y.shape[1]), atol=1e-5)
            assert torch.allclose(y.mean(0), torch.full((y.shape[1],), 0.1), atol=1e-5)


def _reference_calibrate(seq: nn.Sequential, x: torch.Tensor, gen: torch.Generator) -> int:
    """magic_init.py's calibrateGradientRatio written out layer by layer on a Sequential without
    dropout: one Gaussian top gradient per iteration, ratio sqrt(mean g^2 / mean w^2), target =
    geometric mean * output std ^ (1 / L), W, b *= sqrt(ratio / target), b also by the change of
    its input's mean |x|; stops when every |log r / log target - 1| < 0.01, at most 10 times."""
    params = [m for m in seq if isinstance(m, (nn.Conv2d, nn.Linear))]
    bottom: dict[nn.Module, float] = {}

    def flat_std(out):
        return out.transpose(0, 1).reshape(out.shape[1], -1).std(1, unbiased=False).mean().item()

    @torch.no_grad()
    def forward(scale=None):
        a = x
        for m in seq:
            if m in params:
                current = a.abs().mean().item()
                if scale is not None:
                    m.bias *= current / bottom[m]
                    m.weight *= scale[m]
                    m.bias *= scale[m]
                bottom[m] = current
            a = m(a)
        return a

    output_std = flat_std(forward())
    for it in range(10):
        out = seq(x)
        z = torch.randn(out.shape, generator=gen)
        grads = torch.autograd.grad((out * z).sum(), [m.weight for m in params])
        ratio = {
            m: (g.pow(2).mean() / m.weight.detach().pow(2).mean()).sqrt().item()
            for m, g in zip(params, grads, strict=True)
        }
        logs = torch.tensor([math.log(r) for r in ratio.values()], dtype=torch.float64)
        target = math.exp(logs.mean().item()) * output_std ** (1 / len(params))
        if bool(((logs / math.log(target) - 1).abs() < 0.01).all()):
            return it
        output_std = flat_std(forward({m: (r / target) ** 0.5 for m, r in ratio.items()}))
    return 10


def test_between_step_behaves_as_magic_init_on_a_small_net():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
        nn.Flatten(1), nn.Linear(6 * 2 * 2, 5), nn.ReLU(), nn.Linear(5, 3),
    )  # fmt: skip
    with torch.no_grad():  # very different layer scales, so the step has work to do
        for m, s in zip([net[0], net[3], net[6], net[8]], [5.0, 0.1, 3.0, 0.02], strict=True):
            m.weight.mul_(s)
    ref = copy.deepcopy(net)
    x = torch.randn(16, 3, 10, 10)
    rec = between_layer_rescale_(net, x, seed=7)
    iterations = _reference_calibrate(ref, x, torch.Generator().manual_seed(7))
    assert rec["iterations"] == iterations > 0 and rec["layers"] == 4
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert rec["spread_after"] < rec["spread_before"]


def test_calibration_runs_in_train_mode_with_dropout_and_restores_modes():
    net = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 8))
    net.eval()
    seen = []
    net[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    rescale_(net, torch.randn(32, 8), "full")
    assert len(seen) > 3 and all(seen)  # dropout on while calibrating, as the reference's TRAIN net
    assert not any(m.training for m in net.modules())


def test_full_equalises_the_change_rates_and_keeps_the_function_up_to_scale(tmp_path):
    path, images = _checkpoint(tmp_path), _images()
    plain, _ = resolve_encoder(path, calibration_images=images)
    full, info = resolve_encoder(path, calibration_images=images, rescale="full")

    def spread(enc):
        rates = layer_change_rates(enc, images, draws=8, generator=torch.Generator().manual_seed(9))
        assert len(rates) == 5  # conv1..conv5
        return max(rates) / min(rates)

    assert spread(plain) > 3.0
    assert spread(full) < 1.5
    between = info["meta"]["rescale"]["between"]
    assert between["layers"] == 5 and between["iterations"] >= 1
    assert between["spread_before"] > 3.0 > 2.0 > between["spread_after"]  # one draw: noisier
    # a homogeneous network computes the same function up to one output scale
    plain.eval(), full.eval()
    with torch.no_grad():
        a, b = plain(images), full(images)
    c = (b.abs().sum() / a.abs().sum()).item()
    assert torch.allclose(a * c, b, rtol=1e-3, atol=1e-4 * b.abs().max().item())
    # ... while the weights did change
    wa = [m.weight for m in plain.modules() if isinstance(m, nn.Conv2d)]
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
    assert common_keys(args)["rescale"] == "full" and HarnessConfig().rescale == "none"
    argv = ["--encoder", "random:tiny", "--out", "o", "--preset", "small", "--rescale", "full"]
    cfg = config_from_args("classify", get_args_parser("classify").parse_args(argv))
    assert cfg.rescale == "full" and cfg.epochs == 6  # the option over the small preset
    with pytest.raises(SystemExit):
        p.parse_args(["--encoder", "x", "--out", "o", "--rescale", "half"])
    with pytest.raises(ConfigError, match="rescale"):
        HarnessConfig(rescale="half").validate()
    with pytest.raises(ConfigError, match="rescale"):
        resolve_encoder(SPEC, rescale="half")
    with pytest.raises(ConfigError, match="needs a batch of training images"):
        resolve_encoder(_checkpoint(tmp_path), rescale="within")
    assert isinstance(args, argparse.Namespace)
