"""Encoders, the channel-wise FC layer, decoder, discriminator, context-encoder presets, hub weights.

.venv/bin/python -m pytest -q tests/test_models.py
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.core.config import apply_overrides
from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.encoder_file import load_encoder, save_encoder
from cebench.pretrain.losses import reconstruction_loss
from cebench.pretrain.models import (
    MODEL_PRESETS,
    ModelConfig,
    build_context_encoder,
    build_discriminator,
    build_encoder,
    list_encoders,
    model_config,
)
from cebench.pretrain.models.channelwise import ChannelwiseFC
from cebench.pretrain.models.context_encoder import count_parameters
from cebench.pretrain.models.decoder import Discriminator
from cebench.pretrain.models.hub import load_hub_weights


def _shapes(enc, size: int) -> dict[str, tuple[int, ...]]:
    enc.eval()
    with torch.no_grad():
        return {
            k: tuple(v.shape[1:])
            for k, v in enc.forward_features(torch.zeros(1, 3, size, size)).items()
        }


def test_registry_has_every_family():
    assert {"tiny", "alexnet", "alexnet-poolfree", "dcgan", "timm", "timm-resnet18"} <= set(
        list_encoders()
    )


@pytest.mark.parametrize("name", ["alexnet", "alexnet-poolfree"])
def test_alexnet_paper_sizes(name):
    enc = build_encoder(name)
    assert enc.input_size == 227
    shapes = _shapes(enc, 227)
    assert list(shapes) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert shapes["conv1"] == (96, 55, 55) and shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6) and enc.num_features == 256
    assert [f.channels for f in enc.feature_info] == [s[0] for s in shapes.values()]
    has_maxpool = any(isinstance(m, nn.MaxPool2d) for m in enc.modules())
    assert has_maxpool == (name == "alexnet")
    if name == "alexnet-poolfree":  # each pool became a learned 3x3 stride-2 convolution
        conv = enc.stages["pool5"][0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (2, 2)


def test_alexnet_small_and_bad_sizes():
    enc = build_encoder("alexnet", **MODEL_PRESETS["small-alexnet"].encoder_kwargs, input_size=64)
    assert _shapes(enc, 64)["pool5"] == (64, 3, 3)
    with pytest.raises(ConfigError, match="no pool5 map"):
        build_encoder("alexnet", input_size=64)


@pytest.mark.parametrize(
    "size,depth,widths", [(128, 5, [64, 64, 128, 256, 512]), (64, 4, [64, 128, 256, 512])]
)
def test_dcgan_encoder_released_sizes(size, depth, widths):
    enc = build_encoder("dcgan", input_size=size)
    shapes = _shapes(enc, size)
    assert len(shapes) == depth and list(shapes.values())[-1] == (512, 4, 4)
    assert [s[0] for s in shapes.values()] == widths
    bns = [any(isinstance(m, nn.BatchNorm2d) for m in stage) for stage in enc.stages.values()]
    assert bns == [False] + [True] * (depth - 1)  # DCGAN: no BatchNorm on the first layer
    assert all(
        isinstance(stage[-1], nn.LeakyReLU) and stage[-1].negative_slope == 0.2
        for stage in enc.stages.values()
    )


def test_timm_resnet18_regrouped_stages_equal_timm_features():
    import timm

    torch.manual_seed(0)
    enc = build_encoder("timm-resnet18", input_size=64).eval()
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", features_only=True, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, ref_feats = enc.forward_features(x), ref(x)
    assert list(feats) == ["act1", "layer1", "layer2", "layer3", "layer4"]
    for (name, f), r, info in zip(feats.items(), ref_feats, enc.feature_info, strict=True):
        assert torch.allclose(f, r, atol=1e-6), name
        assert f.shape[1] == info.channels and f.shape[-1] == 64 // info.reduction
    assert torch.equal(enc(x), feats["layer4"])


def test_channelwise_fc_matches_per_channel_linear_reference():
    m, n = 5, 3
    layer = ChannelwiseFC(m, n)
    assert count_parameters(layer) == m * n**4 + m * n**2  # no weights across channels
    x = torch.randn(4, m, n, n)
    ref = torch.empty(4, m, n * n)
    for c in range(m):  # naive reference: one nn.Linear per channel
        lin = nn.Linear(n * n, n * n)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[c])
            lin.bias.copy_(layer.bias[c])
        ref[:, c] = lin(x[:, c].reshape(4, n * n))
    assert torch.allclose(layer(x), ref.view(4, m, n, n), atol=1e-6)
    # output map 0 depends on input map 0 only
    x.requires_grad_(True)
    layer(x)[:, 0].sum().backward()
    assert x.grad[:, 1:].abs().sum() == 0 and x.grad[:, 0].abs().sum() > 0


def _upconvs(module: nn.Module) -> list[nn.ConvTranspose2d]:
    return [m for m in module.modules() if isinstance(m, nn.ConvTranspose2d)]


def test_paper_inpainting_preset_is_the_released_net():
    cfg = MODEL_PRESETS["paper-inpainting"]
    G, D = build_context_encoder(cfg), build_discriminator(cfg)
    assert G.bottleneck[0].weight.shape == (4000, 512, 4, 4)  # 4x4 conv to 1x1x4000
    ups = _upconvs(G.decoder)
    assert len(ups) == 5 and ups[0].stride == (1, 1) and all(u.stride == (2, 2) for u in ups[1:])
    G.eval()
    with torch.no_grad():
        y = G(torch.randn(2, 3, 128, 128))
    assert y.shape == (2, 3, 64, 64) and float(y.abs().max()) <= 1.0
    assert D(y).shape == (2,)
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())  # logits; BCE-with-logits
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]


def test_paper_inpainting_random_preset_predicts_the_whole_image():
    cfg = MODEL_PRESETS["paper-inpainting-random"]
    G = build_context_encoder(cfg).eval()
    ups = _upconvs(G.decoder)
    assert [u.out_channels for u in ups] == [512, 256, 128, 64, 64, 3]  # train_random.lua
    with torch.no_grad():
        assert G(torch.randn(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    convs = [m for m in build_discriminator(cfg).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 256, 512, 1]


@pytest.mark.parametrize("preset", ["paper-alexnet", "paper-alexnet-poolfree"])
def test_paper_alexnet_presets(preset):
    cfg = MODEL_PRESETS[preset]
    G = build_context_encoder(cfg).eval()
    assert G.bottleneck[0].weight.shape == (256, 36, 36)  # channel-wise FC on 6x6x256
    assert len(_upconvs(G.decoder)) == 5 and G.decoder.upconv_size == 192  # resized to 227
    with torch.no_grad():
        y = G(torch.randn(1, 3, 227, 227))
    assert y.shape == (1, 3, 227, 227)
    assert build_discriminator(cfg)(y).shape == (1,)


@pytest.mark.parametrize("preset", ["small-tiny", "small-dcgan", "small-alexnet", "small-resnet18"])
def test_small_presets_shapes_and_region_variant(preset):
    G, D = build_context_encoder(MODEL_PRESETS[preset]), build_discriminator(MODEL_PRESETS[preset])
    x = torch.randn(2, 3, 64, 64)
    y = G(x)
    assert y.shape == (2, 3, 64, 64) and D(y).shape == (2,)
    if preset in ("small-tiny", "small-dcgan"):  # the decoder adapts to a centre-region output
        G32 = build_context_encoder(model_config(preset, predict="region", output_size=32))
        assert G32(x).shape == (2, 3, 32, 32)


def test_model_config_errors_and_overrides():
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_config("huge")
    with pytest.raises(ConfigError, match="unknown model config key"):
        model_config("small-tiny", widths=[1])
    with pytest.raises(ConfigError, match="must equal model.input_size"):
        model_config("small-tiny", output_size=32)
    cfg = apply_overrides(
        ModelConfig(),
        ["bottleneck=channelwise", "decoder_widths=[8,8]", "encoder_kwargs={width: 8}"],
    )
    assert (
        cfg.bottleneck == "channelwise"
        and cfg.decoder_widths == [8, 8]
        and cfg.encoder_kwargs == {"width": 8}
    )
    with pytest.raises(ConfigError, match="bottleneck"):
        apply_overrides(ModelConfig(), ["bottleneck=fc"])


def test_encoder_checkpoint_round_trip(tmp_path):
    G = build_context_encoder(MODEL_PRESETS["small-alexnet"]).eval()
    assert G.encoder_kwargs["input_size"] == 64 and G.encoder_kwargs["conv1_stride"] == 2
    save_encoder(
        tmp_path / "encoder.pt", G.encoder, G.encoder_name, G.encoder_kwargs, {"method": "ce"}
    )
    enc, info = load_encoder(tmp_path / "encoder.pt")
    enc.eval()
    x = torch.randn(2, 3, 64, 64)
    assert info["name"] == "alexnet" and torch.equal(enc(x), G.encoder(x))


def test_reconstruction_loss_goes_down_on_small_tiny():
    torch.manual_seed(0)
    G = build_context_encoder(model_config("small-tiny", input_size=32, output_size=32))
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    w = torch.ones(4, 1, 32, 32)
    losses = []
    for _ in range(10):
        loss = reconstruction_loss(G(x), x, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_discriminator_sizes():
    assert Discriminator(32, 8)(torch.randn(2, 3, 32, 32)).shape == (2,)
    assert Discriminator(227, 8)(torch.randn(1, 3, 227, 227)).shape == (1,)


def test_hub_weights_missing_is_a_clear_checkpoint_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match="Nothing is downloaded"):
        load_hub_weights(url="https://example.org/weights/some-model.pth")
    with pytest.raises(CheckpointError, match="not found in the local cache"):
        build_encoder("alexnet", layout="torchvision", norm="none", pretrained=True)
    with pytest.raises(CheckpointError, match="timm/resnet18"):
        build_encoder("timm-resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="torchvision architecture"):
        build_encoder("alexnet", pretrained=True)


def test_hub_weights_load_from_cache(tmp_path, monkeypatch):
    import timm
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    ckpt_dir = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    tv = torchvision.models.alexnet()  # random weights standing in for the cached ImageNet file
    features = {k: v for k, v in tv.state_dict().items() if k.startswith("features.")}
    torch.save(features, ckpt_dir / "alexnet-owt-7be5be79.pth")  # the classifier is not needed
    enc = build_encoder("alexnet", layout="torchvision", norm="none", pretrained=True).eval()
    x = torch.randn(1, 3, 227, 227)
    assert torch.allclose(enc(x), tv.features(x), atol=1e-5)
    full = timm.create_model("resnet18")  # cached under its timm URL's file name
    torch.save(full.state_dict(), ckpt_dir / "resnet18_a1_0-d63eafa0.pth")
    res = build_encoder("timm-resnet18", pretrained=True)
    assert torch.equal(res.stages["layer4"][0].conv1.weight, full.layer4[0].conv1.weight)


def test_hub_weights_from_hugging_face_cache(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    sd = {"conv1.weight": torch.randn(4, 3, 2, 2)}
    save_file(sd, str(snap / "model.safetensors"))
    got = load_hub_weights(hf_repo="timm/resnet18.a1_in1k", url="https://example.org/x.pth")
    assert torch.equal(got["conv1.weight"], sd["conv1.weight"])


def test_model_config_overrides_copy_and_never_touch_the_preset():
    from cebench.pretrain.models.context_encoder import MODEL_PRESETS, model_config

    before = dict(MODEL_PRESETS["small-dcgan"].encoder_kwargs)
    cfg = model_config("small-dcgan", encoder_kwargs={"width": 8}, decoder_widths=[32, 16])
    assert cfg.encoder_kwargs == {"width": 8} and cfg.decoder_widths == [32, 16]
    plain = model_config("small-dcgan")
    plain.encoder_kwargs["width"] = 999
    plain.decoder_widths.append(1)
    assert MODEL_PRESETS["small-dcgan"].encoder_kwargs == before
    assert 1 not in MODEL_PRESETS["small-dcgan"].decoder_widths


def test_model_presets_are_named_deltas_over_their_base():
    """Each preset is its base's config with only its own differing arguments replaced."""
    import dataclasses

    from cebench.pretrain.models.context_encoder import PRESET_DELTAS, register_model_preset

    assert set(PRESET_DELTAS) == set(MODEL_PRESETS)
    base, delta = PRESET_DELTAS["paper-alexnet-poolfree"]
    assert (base, delta) == ("paper-alexnet", {"encoder": "alexnet-poolfree"})
    a, b = MODEL_PRESETS["paper-alexnet"], MODEL_PRESETS["paper-alexnet-poolfree"]
    assert dataclasses.replace(a, encoder="alexnet-poolfree") == b
    # the hand-written values of two presets, resolved through their chains of bases
    assert dataclasses.asdict(MODEL_PRESETS["small-dcgan"]) == {
        "encoder": "dcgan",
        "encoder_kwargs": {"width": 16},
        "input_size": 64,
        "bottleneck": "conv",
        "bottleneck_dim": 256,
        "decoder_widths": [128, 64, 32, 16],
        "output_size": 64,
        "predict": "image",
        "disc_width": 16,
        "bottleneck_dropout": 0.0,
        "init": "torch",
    }
    assert MODEL_PRESETS["paper-alexnet"].init == "dcgan"  # inherited from paper-inpainting
    assert MODEL_PRESETS["paper-alexnet"].bottleneck_dim == 4000
    # a variant's copy never shares its base's lists
    assert (
        MODEL_PRESETS["small-alexnet"].decoder_widths
        is not MODEL_PRESETS["small-tiny"].decoder_widths
    )
    with pytest.raises(ValueError, match="already registered"):
        register_model_preset("small-tiny", encoder="tiny")
    with pytest.raises(ValueError, match="unknown base 'nope'"):
        register_model_preset("x-new", "nope", input_size=32)
    with pytest.raises(ValueError, match="disc_width equal small-tiny"):
        register_model_preset("x-new", "small-tiny", disc_width=16)
    assert "x-new" not in MODEL_PRESETS
