"""The context encoder (Pathak et al. 2016): encoder -> bottleneck -> up-convolutional decoder.

    from cebench.pretrain.models.context_encoder import MODEL_PRESETS, build_context_encoder, model_config
    cfg = model_config("small-tiny")                       # or MODEL_PRESETS["paper-inpainting"]
    cfg = model_config("small-tiny", predict="region", output_size=32)   # centre-mask variant
    register_model_preset("small-tiny-wide", "small-tiny", encoder_kwargs={"width": 32})  # a variant
    G = build_context_encoder(cfg)                         # G(masked [B,3,S,S]) -> [B,3,out,out]
    D = build_discriminator(cfg)                           # D(region or image) -> logits [B]
    save_encoder(path, G.encoder, G.encoder_name, G.encoder_kwargs, meta)   # features for transfer

Bottlenecks: "channelwise" (the paper's feature-learning net: channel-wise FC + stride-1 conv,
the decoder starts from the encoder's map) or "conv" (the released inpainting net: a convolution
to a 1x1 x `bottleneck_dim` code, the decoder starts from 1x1). `predict="region"`: the output is
the centred `output_size` square (centre masks); `predict="image"`: the whole image
(`output_size == input_size`; random masks and the autoencoder).

Weight initialisation (`init`): "dcgan" is the released code's `weights_init` (train.lua): every
convolution and up-convolution weight N(0, 0.02) with bias 0, every BatchNorm weight N(1, 0.02)
with bias 0, in the generator (encoder, bottleneck, decoder) and the discriminator; the
channel-wise FC layer (no Lua counterpart) keeps its per-channel `nn.Linear` init, and an encoder
built with `pretrained=True` keeps its loaded weights. "torch" keeps PyTorch's default init. The
paper-* presets use "dcgan"; the small-* presets keep "torch": their 64 px networks and the
committed default-suite results (results/default) were tuned and produced with it, and they are
not a reproduction of the paper.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.models._registry import build_encoder
from cebench.pretrain.models.base import Encoder
from cebench.pretrain.models.channelwise import ChannelwiseBottleneck
from cebench.pretrain.models.decoder import ConvBottleneck, Discriminator, UpconvDecoder


@dataclass
class ModelConfig:
    encoder: str = "dcgan"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # everything but input_size
    input_size: int = 128
    bottleneck: Literal["channelwise", "conv"] = "conv"
    bottleneck_dim: int = 4000  # only for "conv": channels of the 1x1 code
    decoder_widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64])  # + final 3
    output_size: int = 64
    predict: Literal["region", "image"] = "region"
    disc_width: int = 64  # discriminator: filters of the first layer, doubling
    # dropout on the channel-wise FC layer's output only ("channelwise"); paper Sec. 5.2: 0.5
    bottleneck_dropout: float = 0.0
    init: Literal["dcgan", "torch"] = "torch"  # see the module docstring

    def validate(self) -> None:
        if self.bottleneck not in ("channelwise", "conv"):
            raise ConfigError(
                f"model.bottleneck must be 'channelwise' or 'conv', got {self.bottleneck!r}"
            )
        if self.predict not in ("region", "image"):
            raise ConfigError(f"model.predict must be 'region' or 'image', got {self.predict!r}")
        if self.input_size < 8:
            raise ConfigError(f"model.input_size must be >= 8, got {self.input_size}")
        if self.predict == "image" and self.output_size != self.input_size:
            raise ConfigError(
                f"model.output_size ({self.output_size}) must equal model.input_size "
                f"({self.input_size}) when model.predict='image'"
            )
        if not 4 <= self.output_size <= self.input_size:
            raise ConfigError(
                f"model.output_size must be in [4, input_size], got {self.output_size}"
            )
        if (
            self.bottleneck_dim < 1
            or self.disc_width < 1
            or any(w < 1 for w in self.decoder_widths)
        ):
            raise ConfigError(
                "model.bottleneck_dim, model.disc_width and model.decoder_widths must be >= 1"
            )
        if not 0.0 <= self.bottleneck_dropout < 1.0:
            raise ConfigError(
                f"model.bottleneck_dropout must be in [0, 1), got {self.bottleneck_dropout}"
            )
        if self.bottleneck_dropout > 0 and self.bottleneck != "channelwise":
            raise ConfigError(
                "model.bottleneck_dropout applies to the channel-wise FC layer: it needs "
                f"model.bottleneck=channelwise, got {self.bottleneck!r}"
            )
        if self.init not in ("dcgan", "torch"):
            raise ConfigError(f"model.init must be 'dcgan' or 'torch', got {self.init!r}")
        if "input_size" in self.encoder_kwargs:
            raise ConfigError("set model.input_size, not model.encoder_kwargs.input_size")


# name -> config. A preset is registered as a named delta over its base (the ModelConfig defaults
# when base is None): only the arguments that differ from the base, as timm registers a variant.
MODEL_PRESETS: dict[
    str, ModelConfig
] = {}  # resolved, read-only by convention (model_config copies)
PRESET_DELTAS: dict[str, tuple[str | None, dict[str, Any]]] = {}  # name -> (base, delta)


def register_model_preset(name: str, base: str | None = None, **delta: Any) -> ModelConfig:
    """Add the model preset `name`: `base`'s config (a registered preset, or the ModelConfig
    defaults for None) with the fields in `delta` replaced. A duplicate name, an unknown base or
    field, and a delta entry equal to the base's value (not a difference) are refused."""
    if name in MODEL_PRESETS:
        raise ValueError(f"model preset {name!r} is already registered")
    if base is not None and base not in MODEL_PRESETS:
        raise ValueError(f"model preset {name!r}: unknown base {base!r}")
    parent = MODEL_PRESETS[base] if base is not None else ModelConfig()
    same = sorted(k for k, v in delta.items() if hasattr(parent, k) and getattr(parent, k) == v)
    if same:
        raise ValueError(f"model preset {name!r}: {', '.join(same)} equal {base or 'the defaults'}")
    cfg = _replaced(parent, delta)
    MODEL_PRESETS[name] = cfg
    PRESET_DELTAS[name] = (base, dict(delta))
    return cfg


def _replaced(base: ModelConfig, fields_: dict[str, Any]) -> ModelConfig:
    """A validated copy of `base` with `fields_` replaced (its lists and dicts copied, so that
    editing the result never changes a shared preset)."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(fields_) - names)
    if bad:
        raise ConfigError(
            f"unknown model config key {bad[0]!r}; valid keys: {', '.join(sorted(names))}"
        )
    copies = {
        "encoder_kwargs": dict(base.encoder_kwargs),
        "decoder_widths": list(base.decoder_widths),
    }
    cfg = dataclasses.replace(base, **{**copies, **fields_})
    cfg.validate()
    return cfg


# Released inpainting net: 128 px in, DCGAN encoder to 4x4x512, 4x4 conv to 1x1x4000,
# 5 up-convs (1 -> 4 -> 8 -> 16 -> 32 -> 64), 64 px centre region out (the ModelConfig defaults).
register_model_preset("paper-inpainting", init="dcgan")
# Released random-region trainer (train_random.lua): same net, whole 128 px image out
# (6 up-convs, the extra 64-filter one for 128 px) and a 128 px discriminator.
register_model_preset(
    "paper-inpainting-random",
    "paper-inpainting",
    decoder_widths=[512, 256, 128, 64, 64],
    output_size=128,
    predict="image",
)
# Feature-learning net: AlexNet conv1..pool5 on 227 px (6x6x256), channel-wise FC,
# 5 up-convs (6 -> 12 -> ... -> 192, resized to 227): the whole image (random-region masks).
register_model_preset(
    "paper-alexnet",
    "paper-inpainting",
    encoder="alexnet",
    input_size=227,
    bottleneck="channelwise",
    decoder_widths=[256, 128, 64, 32],
    output_size=227,
    predict="image",
    bottleneck_dropout=0.5,  # paper Sec. 5.2: dropout on the channel-wise FC only
)
register_model_preset("paper-alexnet-poolfree", "paper-alexnet", encoder="alexnet-poolfree")
# Small 64 px versions for the built-in data (CPU-fast).
register_model_preset(
    "small-tiny",
    encoder="tiny",
    encoder_kwargs={"width": 16},
    input_size=64,
    bottleneck="channelwise",
    decoder_widths=[64, 32],
    predict="image",  # output_size: the default 64
    disc_width=16,
)
# AlexNet at 64 px: conv1 5x5/2 (the 11x11/4 stem leaves no pool5 map at 64 px), a quarter
# of the filters, BatchNorm; pool5 is 3x3x64.
register_model_preset(
    "small-alexnet",
    "small-tiny",
    encoder="alexnet",
    encoder_kwargs={
        "width": 0.25,
        "norm": "bn",
        "conv1_kernel": 5,
        "conv1_stride": 2,
        "conv1_padding": 2,
    },
    decoder_widths=[128, 64, 32, 16],
)
# timm ResNet-18 at 64 px: layer4 is 2x2x512; 5 up-convs 2 -> 64.
register_model_preset(
    "small-resnet18",
    "small-tiny",
    encoder="timm-resnet18",
    encoder_kwargs={},
    decoder_widths=[256, 128, 64, 32],
)
register_model_preset(
    "small-dcgan",
    "small-tiny",
    encoder="dcgan",
    bottleneck="conv",
    bottleneck_dim=256,
    decoder_widths=[128, 64, 32, 16],
)


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """A copy of MODEL_PRESETS[preset] with fields replaced; unknown presets/fields are ConfigErrors."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; presets: {', '.join(MODEL_PRESETS)}")
    return _replaced(MODEL_PRESETS[preset], overrides)


class ContextEncoder(nn.Module):
    """`forward(masked [B,3,S,S] in [-1,1]) -> [B,3,out,out]` in [-1,1] (tanh)."""

    def __init__(
        self,
        encoder: Encoder,
        bottleneck: nn.Module,
        decoder: UpconvDecoder,
        encoder_name: str,
        encoder_kwargs: dict[str, Any],
        cfg: ModelConfig,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.encoder_name = encoder_name  # with encoder_kwargs: what save_encoder records
        self.encoder_kwargs = dict(encoder_kwargs)
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))


def build_context_encoder(cfg: ModelConfig) -> ContextEncoder:
    cfg.validate()
    enc_kwargs = {**cfg.encoder_kwargs, "input_size": cfg.input_size}
    encoder = build_encoder(cfg.encoder, **enc_kwargs)
    c, h, w = encoder.output_shape(cfg.input_size)
    if h != w or h < 1:
        raise ConfigError(
            f"encoder '{cfg.encoder}' gives a {h}x{w} map at {cfg.input_size} px; need square"
        )
    if cfg.bottleneck == "conv":
        bottleneck: nn.Module = ConvBottleneck(c, h, cfg.bottleneck_dim)
        code_channels, code_size = cfg.bottleneck_dim, 1
    else:
        bottleneck = ChannelwiseBottleneck(c, h, dropout=cfg.bottleneck_dropout)
        code_channels, code_size = c, h
    if code_size > cfg.output_size:
        raise ConfigError(
            f"the encoder's {h}x{w} map is larger than model.output_size {cfg.output_size}"
        )
    decoder = UpconvDecoder(code_channels, code_size, cfg.decoder_widths, cfg.output_size)
    # The weights travel in the state dict; re-loading ImageNet weights from a cache on rebuild
    # (`load_encoder`) would only be overwritten, and would fail where that cache is absent.
    saved_kwargs = {k: v for k, v in enc_kwargs.items() if k != "pretrained"}
    if cfg.init == "dcgan":
        if not enc_kwargs.get("pretrained"):
            dcgan_init_(encoder)
        dcgan_init_(bottleneck)
        dcgan_init_(decoder)
    return ContextEncoder(encoder, bottleneck, decoder, cfg.encoder, saved_kwargs, cfg)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    """The local discriminator on what the generator predicts (`output_size` px)."""
    cfg.validate()
    disc = Discriminator(cfg.output_size, cfg.disc_width)
    if cfg.init == "dcgan":
        dcgan_init_(disc)
    return disc


@torch.no_grad()
def dcgan_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """The released code's `weights_init` (train.lua, as DCGAN): every (up-)convolution weight
    N(0, std) and bias 0; every BatchNorm weight N(1, std) and bias 0. Other layers unchanged."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
