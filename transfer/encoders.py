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
  output channel k of that conv/linear layer is rescaled so its pre-activation has standard
  deviation 1 and mean 0.1 over the batch and positions (`cebench.transfer.rescale`). The batch
  is the harness's first training images (`calibration_images` of a seeded shuffle);
- `hub:torchvision/alexnet`, `hub:timm/resnet18`: ImageNet weights loaded ONLY from the local
  caches (torch hub checkpoints dir; Hugging Face hub cache for timm) by the registry's
  "alexnet" (torchvision layout) / "timm-resnet18" encoders with `pretrained=True`
  (`cebench.pretrain.models.hub`). Nothing is downloaded; a missing file is a CheckpointError naming
  where it was looked for. `hub:torchvision/alexnet,file=PATH` (or `timm/resnet18`) loads the
  same weights from a file anywhere (torchvision / timm names; `cebench.pretrain.export`);
- a file written by `cebench export` (with its FILE.json sidecar), as a path or `hub:FILE`: the
  exported weights rebuilt into the cebench encoder they came from (a round trip).

`rescale` (the harnesses' `rescale` key, `--rescale`) applies the data-dependent rescaling of
Krähenbühl et al. (`cebench.transfer.rescale`) to ANY of these encoders before training, on the
same calibration batch, as their magic_init.py does:
- "none": nothing (a `random-rescaled:` spec still gets its within-layer step);
- "within": the within-layer step on the FRESH layers only: every layer of a `random:` encoder,
  none of a trained one (a run, `hub:`, an exported file), whose weights it leaves untouched;
- "full": the within-layer step, then their between-layer step over all layers.
A harness whose head has fc6/fc7 rescales the encoder and those layers together
(`cebench.transfer.heads`: `init_fc_head_`, `rescale_network_`); fc6/fc7 are fresh unless the
encoder carries trained ones (`load_trained_fc_`, e.g. torchvision's AlexNet classifier).
Calibration images come in [-1, 1] and are renormalised to the statistics the weights expect
(ImageNet for `hub:`). What was applied is recorded in `info["meta"]["rescale"]`.

`info` = {"spec", "name", "kwargs", "meta", "hash" (sha256 of the weights, for feature caching),
"normalize": {"mean", "std"} the input normalisation the weights expect}.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cebench.core.config import parse_value
from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.export import encoder_from_native_file, is_exported, load_exported
from cebench.transfer.rescale import RESCALE_MODES, rescale_

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
        kwargs[k.strip()] = parse_value(v, f"{k.strip()}' in encoder spec '{spec}")
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


@dataclass
class EncoderInfo:
    """What a harness knows about a resolved encoder (the second value of `resolve_encoder`).

    Typed fields; `info["key"]` reads and writes the same fields (older callers), and `as_dict()`
    is what metrics.json records."""

    spec: str
    name: str
    kwargs: dict[str, Any]
    meta: dict[str, Any]
    normalize: dict[str, list[float]]
    input_size: int
    hash: str
    path: str | None = None  # the encoder.pt or exported file it came from

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        setattr(self, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _load_path(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    if path.is_dir():
        if not (path / "encoder.pt").is_file():
            raise CheckpointError(f"no encoder.pt in run directory {path}")
        path = path / "encoder.pt"
    encoder, info = load_exported(path) if is_exported(path) else load_encoder(path)
    return encoder, {
        **info,
        "normalize": info["meta"].get("normalize", MINUS_ONE_ONE),
        "path": str(path),
    }


def _load_hub(source: str, input_size: int | None) -> tuple[nn.Module, dict[str, Any]]:
    """ImageNet weights through the registry's own `pretrained=True` (local caches only)."""
    from cebench.pretrain.models import build_encoder

    source, _, file = source.partition(",file=")
    # hub:FILE, a `cebench export` file with its sidecar; a built-in name wins over a file of the
    # same name in the working folder (a name is never a path: `cebench.core.config.looks_like_path`)
    if not file and source not in HUB_MODELS and Path(source).is_file():
        encoder, info = _load_path(Path(source))
        if input_size is not None and input_size != encoder.input_size:
            encoder = _with_input_size(encoder, info, input_size, f"hub:{source}")
        return encoder, info
    if source not in HUB_MODELS:
        raise ConfigError(
            f"unknown hub encoder '{source}'; known: {', '.join('hub:' + k for k in HUB_MODELS)}"
        )
    name, kwargs = HUB_MODELS[source]
    kwargs = {**kwargs, **({} if input_size is None else {"input_size": input_size})}
    if file:  # the same weights from a file anywhere (timm / torchvision names)
        encoder = encoder_from_native_file(name, kwargs, file)
    else:
        encoder = build_encoder(name, **kwargs, pretrained=True)  # CheckpointError when not cached
    meta = {
        "method": "imagenet-supervised",
        "source": f"hub:{source}",
        **({"file": file} if file else {}),
    }
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
    rescale: str = "none",
    device: torch.device | str | None = None,
) -> tuple[nn.Module, EncoderInfo]:
    """Build the encoder named by `spec` (see module docstring) -> (encoder, EncoderInfo).

    `calibration_images` (random-rescaled or `rescale` != "none"): a batch in [-1, 1], or a
    function of the input size returning one (the harness then loads its training images at the
    encoder's size). `rescale`: "none" | "within" | "full" (module docstring), computed on
    `device` (default CPU); the encoder is returned on the CPU.
    """
    from cebench.pretrain.models import build_encoder

    if rescale not in RESCALE_MODES:
        raise ConfigError(
            f"config key 'rescale' must be one of {list(RESCALE_MODES)}, got {rescale!r}"
        )
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
    mode = (
        "full" if rescale == "full" else "within" if kind == "random-rescaled" and sep else rescale
    )
    fresh = bool(sep) and kind in ("random", "random-rescaled")
    if mode != "none":
        if callable(calibration_images):
            calibration_images = calibration_images(size)
        if calibration_images is None or len(calibration_images) < 2:
            raise ConfigError(
                f"encoder spec '{spec}' with rescale '{mode}' needs a batch of training images to rescale on"
            )
        images = renormalize(calibration_images, info["normalize"])
        dev = torch.device(device) if device is not None else torch.device("cpu")
        trained = [] if fresh else param_layers(encoder)
        record = rescale_(encoder.to(dev), images.to(dev), mode, seed=seed, trained=trained)
        encoder.cpu()
        info["meta"] = {**info["meta"], "rescale": record}
        if kind == "random-rescaled" and sep:
            info["meta"]["calibration_images"] = len(images)
    else:
        info["meta"] = {**info["meta"], "rescale": {"mode": "none"}}
    info.update(spec=spec, input_size=size, hash=weights_hash(encoder))
    return encoder, EncoderInfo.from_dict(info)


def is_fresh(info: EncoderInfo) -> bool:
    """Whether the encoder's weights are a fresh draw (`random:`, `random-rescaled:`), not trained."""
    return info.meta.get("method") in ("random", "random-rescaled")


def param_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def renormalize(images: torch.Tensor, normalize: dict[str, list[float]]) -> torch.Tensor:
    """A batch in [-1, 1] (the calibration convention) -> normalised by `normalize`."""
    if normalize == MINUS_ONE_ONE:
        return images
    mean = torch.tensor(normalize["mean"], dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(normalize["std"], dtype=images.dtype).view(1, -1, 1, 1)
    return (images * 0.5 + 0.5 - mean) / std
