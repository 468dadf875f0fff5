"""A head's fully connected layers (fc6/fc7) and the rescaling of the encoder with them: the glue
between an encoder (`cebench.transfer.encoders`) and Krähenbühl et al.'s data-dependent init
(`cebench.transfer.rescale`) that the harnesses with fc6/fc7 share (a classification `head=fc`,
Fast R-CNN's c4 head, FCN's fc6/fc7 with `fc_dims` > 0).

    draw_fresh_fc_([fc6, fc7])                       # N(0, 0.01^2), bias 0.1
    init_fc_head_(net, encoder, info, [fc6, fc7], net.features, "full", seed, calibration)

`init_fc_head_` copies the encoder's trained fc6/fc7 when it carries them (`load_trained_fc_`,
e.g. torchvision's AlexNet classifier) and then, unless `rescale` is "none", rescales the encoder
and the head as one network (`rescale_network_`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.transfer.encoders import (
    EncoderInfo,
    is_fresh,
    param_layers,
    renormalize,
    weights_hash,
)
from cebench.transfer.rescale import rescale_


def rescale_network_(
    net: nn.Module,
    encoder: nn.Module,
    info: EncoderInfo,
    images: torch.Tensor,
    mode: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    trained_head: Iterable[nn.Module] = (),
    layers: str = "encoder, fc6, fc7",
) -> None:
    """Rescale `net` (the encoder and the head layers `forward` runs) as one network, as
    magic_init does for a whole Caffe net: the within-layer step on the fresh layers (the
    encoder's when `is_fresh(info)`, and the head's but `trained_head`), then (mode "full") the
    between-layer step over all. `images` in [-1, 1]; records what was done in `info`."""
    trained = list(trained_head) + ([] if is_fresh(info) else param_layers(encoder))
    x = renormalize(images, info.normalize).to(next(net.parameters()).device)
    record = rescale_(net, x, mode, forward=forward, seed=seed, trained=trained)
    info.meta = {**info.meta, "rescale": {**record, "layers": layers}}
    info.hash = weights_hash(encoder)


@torch.no_grad()
def load_trained_fc_(layers: list[nn.Module], encoder: nn.Module) -> bool:
    """Copy the trained fully connected layers an encoder carries (`encoder.trained_fc`: [(weight
    [out, in], bias [out]), ...], e.g. torchvision AlexNet's fc6/fc7) into `layers` (Linear, or
    Conv2d whose k x k kernel over C maps reads the same C*k*k inputs: FCN's convolutionalised
    fc6/fc7, reshaped as Caffe's net surgery copies them). True when every layer got its weights;
    False, with nothing changed, when the encoder carries none or their shapes do not fit."""
    trained = list(getattr(encoder, "trained_fc", None) or [])
    if len(trained) < len(layers) or not layers:
        return False
    for layer, (w, b) in zip(layers, trained, strict=False):
        if layer.weight.shape[0] != w.shape[0] or layer.weight[0].numel() != w[0].numel():
            return False
        if layer.bias is None or layer.bias.shape != b.shape:
            return False
    for layer, (w, b) in zip(layers, trained, strict=False):
        layer.weight.copy_(w.reshape(layer.weight.shape))
        layer.bias.copy_(b)
    return True


@torch.no_grad()
def draw_fresh_fc_(layers: Iterable[nn.Module]) -> None:
    """The fresh draw of fully connected layers in Krähenbühl et al.'s code: N(0, 0.01^2), bias 0.1."""
    for layer in layers:
        layer.weight.normal_(0, 0.01)
        layer.bias.fill_(0.1)


def init_fc_head_(
    net: nn.Module,
    encoder: nn.Module,
    info: EncoderInfo,
    fc: list[nn.Module],
    forward: Callable[[torch.Tensor], torch.Tensor],
    rescale: str,
    seed: int,
    calibration: Callable[[int], torch.Tensor] | None,
    keep_trained: bool = True,
) -> None:
    """A head's fc6/fc7 (`fc`): with `keep_trained`, the encoder's trained ones when it carries
    them that fit (else the fresh draw stays), recorded as `info.meta["fc6_fc7"]`; then, unless
    `rescale` is "none", the encoder and the head's layers that `forward` runs rescaled together
    (`rescale_network_`) on `calibration(input size)` images."""
    trained = fc if keep_trained and load_trained_fc_(fc, encoder) else []
    info.meta = {**info.meta, "fc6_fc7": "trained" if trained else "fresh"}
    if rescale == "none":
        return
    if calibration is None:
        raise ConfigError(f"rescale '{rescale}' needs a batch of training images to rescale on")
    images = calibration(info.input_size)
    rescale_network_(net, encoder, info, images, rescale, forward, seed, trained)
