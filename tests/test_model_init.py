"""The released code's weight init (model.init=dcgan) and the channel-wise FC dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.models.channelwise import ChannelwiseBottleneck, ChannelwiseFC
from cebench.pretrain.models.context_encoder import (
    MODEL_PRESETS,
    build_context_encoder,
    build_discriminator,
    model_config,
)


def _small(init: str, **kw):
    # wide enough for stable statistics, small enough for the CPU
    return model_config(
        "small-tiny",
        init=init,
        encoder_kwargs={"width": 32, "depth": 3},
        decoder_widths=[64, 32],
        disc_width=32,
        **kw,
    )


def _conv_weights(*modules: nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            m.weight.detach().flatten()
            for mod in modules
            for m in mod.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
        ]
    )


def test_dcgan_init_statistics_generator_and_discriminator():
    torch.manual_seed(0)
    cfg = _small("dcgan")
    G, D = build_context_encoder(cfg), build_discriminator(cfg)
    for part in (G.encoder, G.bottleneck, G.decoder, D):
        w = _conv_weights(part)
        assert w.numel() > 1000
        assert abs(w.mean().item()) < 0.003
        assert w.std().item() == pytest.approx(0.02, rel=0.1)
        for m in part.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0
    bn_w = torch.cat(
        [
            m.weight.detach()
            for mod in (G, D)
            for m in mod.modules()
            if isinstance(m, nn.BatchNorm2d)
        ]
    )
    bn_b = torch.cat(
        [m.bias.detach() for mod in (G, D) for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
    )
    assert bn_w.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_w.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.count_nonzero(bn_b) == 0
    # the channel-wise FC has no Lua counterpart: nn.Linear's U(-1/sqrt(n^2), 1/sqrt(n^2))
    fc = next(m for m in G.modules() if isinstance(m, ChannelwiseFC))
    assert fc.weight.abs().max().item() > 0.1


def test_torch_init_differs_from_dcgan():
    torch.manual_seed(0)
    G = build_context_encoder(_small("torch"))
    # PyTorch's default: BatchNorm weight exactly 1; first conv (fan-in 27) std about 0.11
    bn = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) for m in bn)
    first = next(m for m in G.encoder.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.std().item() > 0.05


def test_paper_presets_use_dcgan_init_and_fc_dropout_small_ones_do_not():
    for name in ("paper-inpainting", "paper-inpainting-random", "paper-alexnet"):
        assert MODEL_PRESETS[name].init == "dcgan"
    for name in ("paper-alexnet", "paper-alexnet-poolfree"):
        assert MODEL_PRESETS[name].bottleneck_dropout == 0.5
    assert MODEL_PRESETS["paper-inpainting"].bottleneck_dropout == 0.0  # conv bottleneck
    for name in ("small-tiny", "small-alexnet", "small-dcgan", "small-resnet18"):
        assert MODEL_PRESETS[name].init == "torch"
        assert MODEL_PRESETS[name].bottleneck_dropout == 0.0


def test_channelwise_fc_dropout_only_in_training():
    torch.manual_seed(0)
    layer = ChannelwiseFC(4, 3, dropout=0.5)
    x = torch.randn(8, 4, 3, 3)
    ref = ChannelwiseFC(4, 3)
    ref.load_state_dict(layer.state_dict())  # same keys with and without dropout
    layer.eval()
    assert torch.equal(layer(x), ref(x))
    layer.train()
    y, y0 = layer(x), ref(x)
    dropped = y == 0
    assert 0.3 < dropped.float().mean().item() < 0.7
    # kept outputs are scaled by 1 / (1 - p)
    assert torch.allclose(y[~dropped], 2 * y0[~dropped], atol=1e-6)
    # the bottleneck's dropout is the FC layer's: no separate Dropout module
    bott = ChannelwiseBottleneck(4, 3, dropout=0.5)
    assert not any(isinstance(m, nn.Dropout) for m in bott.modules())
    assert bott[0].dropout == 0.5


def test_dropout_config_checks():
    with pytest.raises(ConfigError, match="bottleneck_dropout must be in"):
        model_config("small-tiny", bottleneck_dropout=1.0)
    with pytest.raises(ConfigError, match="needs model.bottleneck=channelwise"):
        model_config("small-dcgan", bottleneck_dropout=0.5)
    G = build_context_encoder(_small("torch", bottleneck_dropout=0.5))
    assert G.bottleneck[0].dropout == 0.5
