"""Resolve an `--encoder` spec to an initialised encoder.

    enc, info = resolve_encoder("runs/ce/encoder.pt")                 # or the run dir itself
    enc, info = resolve_encoder("random:tiny,width=8", input_size=64)  # Gaussian init
    enc, info = resolve_encoder("random-rescaled:alexnet", input_size=64, calibration_images=x)
    enc, info = resolve_encoder("hub:torchvision/alexnet")            # ImageNet, local cache only

Specs:
- a path to an `encoder.pt` (`cebench.pretrain.encoder_file.save_encoder` format) or to a run directory
  holding one; supervised encoders are those written by `cebench pretrain --method supervised`;
- `random:<name>[,key=value...]`: the paper's "random Gaussian" row: every conv/linear weight drawn
  from N(0, 0.01^2), biases 0, BatchNorm at scale 1 / shift 0;
- `random-rescaled:<name>[,...]`: the same Gaussian draw followed by the within-layer step of the
  data-dependent initialisation of Krähenbühl et al. (ICLR 2016, arXiv 1511.06856): layer by layer
  in forward order, a batch of real training images is passed through the network and every
  output channel k of that conv/linear layer is rescaled so its pre-activation has mean 0 and
  standard deviation 1 over the batch and positions (W_k /= std_k; b_k = -mean_k / std_k, or only
  the scale when the layer has no bias). Their between-layer step (equalising the rate of change
  of the layers through gradient statistics) is not done; layers followed by BatchNorm are
  unaffected by either step. The batch is the harness's first training images;
- `hub:torchvision/alexnet`, `hub:timm/resnet18`: ImageNet weights loaded ONLY from the local
  caches (torch hub checkpoints dir; Hugging Face hub cache for timm) by the registry's
  "alexnet" (torchvision layout) / "timm-resnet18" encoders with `pretrained=True`
  (`cebench.pretrain.models.hub`). Nothing is downloaded; a missing file is a CheckpointError naming
  where it was looked for.

`info` = {"spec", "name", "kwargs", "meta", "hash" (sha256 of the weights, for feature caching),
"normalize": {"mean", "std"} the input normalisation the weights expect}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.encoder_file import load_encoder

# Pretraining scales images to [-1, 1]; ImageNet weights expect ImageNet statistics.
MINUS_ONE_ONE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

# hub source -> (registry name, build kwargs); weights come from the registry's pretrained=True
HUB_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "torchvision/alexnet": ("alexnet", {"layout": "torchvision", "norm": "none"}),
    "timm/resnet18": ("timm-resnet18", {}),
}


def _parse_name_kwargs(body: str, spec: str) -> tuple[str, dict[str, Any]]:
    name, *items = [s.strip() for s in body.split(",")]
    if not name:
        raise ConfigError(
            f"encoder spec '{spec}' names no encoder (expected random:<name>[,key=value])"
        )
    kwargs: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"encoder spec '{spec}': '{item}' is not of the form key=value")
        k, v = item.split("=", 1)
        kwargs[k.strip()] = yaml.safe_load(v)
    return name, kwargs


def weights_hash(module: nn.Module) -> str:
    """sha256 of the state dict (names, shapes, values): the feature cache's encoder key."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def gaussian_init_(
    module: nn.Module, std: float = 0.01, generator: torch.Generator | None = None
) -> None:
    """Conv/linear weights ~ N(0, std^2), biases 0, norm layers at identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class _StopForward(Exception):
    """Ends a calibration forward pass once the layer being rescaled has run."""


@torch.no_grad()
def data_dependent_rescale_(encoder: nn.Module, images: torch.Tensor, eps: float = 1e-8) -> None:
    """Within-layer data-dependent init (Krähenbühl et al. 2016): unit-variance, zero-mean channels.

    Layers are visited in the order they run on `images`; each is calibrated with all earlier
    layers already rescaled, so every layer sees the distribution it will see at the start of
    training. BatchNorm is run in eval mode (its running statistics are the identity at init).
    """
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod) if mod not in order else None)
        for m in encoder.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = encoder.training
    encoder.eval()
    try:
        encoder(images)
    finally:
        for h in hooks:
            h.remove()
    for layer in order:
        stats: list[tuple[torch.Tensor, torch.Tensor]] = []

        def grab(_m, _i, out: torch.Tensor, box=stats) -> None:
            # statistics now: an in-place activation (ReLU(inplace=True)) overwrites `out` next
            dims = [d for d in range(out.dim()) if d != 1] if out.dim() > 2 else [0]
            box.append((out.mean(dim=dims), out.std(dim=dims)))
            raise _StopForward

        hook = layer.register_forward_hook(grab)
        try:
            encoder(images)
        except _StopForward:
            pass
        finally:
            hook.remove()
        mean, std = stats[0]
        scale = 1.0 / (std + eps)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.view(shape))
        if layer.bias is not None:
            layer.bias.copy_(layer.bias * scale - mean * scale)
    encoder.train(was_training)


def _load_path(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    if path.is_dir():
        if not (path / "encoder.pt").is_file():
            raise CheckpointError(f"no encoder.pt in run directory {path}")
        path = path / "encoder.pt"
    encoder, info = load_encoder(path)
    return encoder, {
        **info,
        "normalize": info["meta"].get("normalize", MINUS_ONE_ONE),
        "path": str(path),
    }


def _load_hub(source: str, input_size: int | None) -> tuple[nn.Module, dict[str, Any]]:
    """ImageNet weights through the registry's own `pretrained=True` (local caches only)."""
    from cebench.pretrain.models import build_encoder

    if source not in HUB_MODELS:
        raise ConfigError(
            f"unknown hub encoder '{source}'; known: {', '.join('hub:' + k for k in HUB_MODELS)}"
        )
    name, kwargs = HUB_MODELS[source]
    kwargs = {**kwargs, **({} if input_size is None else {"input_size": input_size})}
    encoder = build_encoder(name, **kwargs, pretrained=True)  # CheckpointError when not cached
    meta = {"method": "imagenet-supervised", "source": f"hub:{source}"}
    return encoder, {"name": name, "kwargs": kwargs, "meta": meta, "normalize": IMAGENET}


def _with_input_size(
    encoder: nn.Module, info: dict[str, Any], input_size: int, spec: str
) -> nn.Module:
    """Rebuild a checkpointed encoder for another input size; its weights must still fit."""
    from cebench.pretrain.models import build_encoder

    kwargs = {**info["kwargs"], "input_size": input_size}
    other = build_encoder(info["name"], **kwargs)
    try:
        other.load_state_dict(encoder.state_dict())
    except RuntimeError as e:
        raise CheckpointError(
            f"encoder {spec} was built for input size {encoder.input_size} and its weights do not fit "
            f"input size {input_size} (use --input-size {encoder.input_size}): {str(e).splitlines()[0]}"
        ) from None
    info["kwargs"] = kwargs
    return other


def check_input_size(encoder: nn.Module, input_size: int, spec: str) -> None:
    """A forward pass at `input_size` must work and leave every stage at least 1x1."""
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            p = next(encoder.parameters())
            feats = encoder.forward_features(
                torch.zeros(1, 3, input_size, input_size, device=p.device, dtype=p.dtype)
            )
    except RuntimeError as e:
        raise ConfigError(
            f"encoder {spec} cannot run on {input_size}x{input_size} images: {str(e).splitlines()[0]}"
        ) from None
    finally:
        encoder.train(was)
    for name, f in feats.items():
        if f.dim() == 4 and min(f.shape[-2:]) < 1:
            raise ConfigError(
                f"encoder {spec}: stage '{name}' is empty for {input_size}x{input_size} images"
            )


def resolve_encoder(
    spec: str,
    input_size: int | None = None,
    calibration_images: torch.Tensor | Callable[[int], torch.Tensor] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the encoder named by `spec` (see module docstring) -> (encoder, info).

    `calibration_images` (random-rescaled only): a batch in [-1, 1], or a function of the input
    size returning one (the harness then loads its training images at the encoder's size).
    """
    from cebench.pretrain.models import build_encoder

    if not spec:
        raise ConfigError(
            "no encoder given (--encoder PATH | random:<name> | random-rescaled:<name> | hub:<source>)"
        )
    kind, sep, body = spec.partition(":")
    if sep and kind in ("random", "random-rescaled"):
        name, kwargs = _parse_name_kwargs(body, spec)
        if input_size is not None:
            kwargs.setdefault("input_size", input_size)
        gen = torch.Generator().manual_seed(seed)
        encoder = build_encoder(name, **kwargs)
        gaussian_init_(encoder, 0.01, gen)
        meta: dict[str, Any] = {"method": kind, "init_std": 0.01, "seed": seed}
        if kind == "random-rescaled":
            if callable(calibration_images):
                calibration_images = calibration_images(encoder.input_size)
            if calibration_images is None or len(calibration_images) < 2:
                raise ConfigError(
                    f"encoder spec '{spec}' needs a batch of training images to rescale on"
                )
            data_dependent_rescale_(encoder, calibration_images)
            meta["calibration_images"] = len(calibration_images)
        info = {"name": name, "kwargs": kwargs, "meta": meta, "normalize": MINUS_ONE_ONE}
    elif sep and kind == "hub":
        encoder, info = _load_hub(body, input_size)
    elif sep and len(kind) > 1 and not Path(spec).exists():
        raise ConfigError(
            f"unknown encoder spec kind '{kind}:' in '{spec}' (use random:, random-rescaled:, hub: or a path)"
        )
    else:
        path = Path(spec)
        if not path.exists():
            raise CheckpointError(
                f"encoder checkpoint not found: {path} (expected encoder.pt or a run directory)"
            )
        encoder, info = _load_path(path)
        if input_size is not None and input_size != getattr(encoder, "input_size", input_size):
            encoder = _with_input_size(encoder, info, input_size, spec)
    if not hasattr(encoder, "forward_features") or not getattr(encoder, "feature_info", None):
        raise CheckpointError(f"encoder {spec} does not expose the Encoder feature API")
    size = input_size or encoder.input_size
    check_input_size(encoder, size, spec)
    info.update(spec=spec, input_size=size, hash=weights_hash(encoder))
    return encoder, info
