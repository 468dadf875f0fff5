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
  the scale when the layer has no bias). The batch is the harness's first training images
  (`calibration_images` of a seeded shuffle);
- `hub:torchvision/alexnet`, `hub:timm/resnet18`: ImageNet weights loaded ONLY from the local
  caches (torch hub checkpoints dir; Hugging Face hub cache for timm) by the registry's
  "alexnet" (torchvision layout) / "timm-resnet18" encoders with `pretrained=True`
  (`cebench.pretrain.models.hub`). Nothing is downloaded; a missing file is a CheckpointError naming
  where it was looked for. `hub:torchvision/alexnet,file=PATH` (or `timm/resnet18`) loads the
  same weights from a file anywhere (torchvision / timm names; `cebench.pretrain.export`);
- a file written by `cebench export` (with its FILE.json sidecar), as a path or `hub:FILE`: the
  exported weights rebuilt into the cebench encoder they came from (a round trip).

`rescale` (the harnesses' `rescale` key, `--rescale`) applies the data-dependent rescaling of
Krähenbühl et al. to ANY of these encoders before training, on the same calibration batch:
- "none": nothing (a `random-rescaled:` spec still gets its within-layer step);
- "within": the within-layer step above (`data_dependent_rescale_`);
- "full": the within-layer step, then their between-layer step (`between_layer_rescale_`, their
  Algorithm 2): every conv/linear layer k is rescaled so that its relative rate of change
  C_k = E||dL/dW_k||^2 / ||W_k||^2 approaches the geometric mean over the layers.
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


class _StopForward(Exception):
    """Ends a calibration forward pass once the layer being rescaled has run."""


RESCALE_MODES = ("none", "within", "full")


@torch.no_grad()
def run_order(
    module: nn.Module, images: torch.Tensor, forward: Callable | None = None
) -> list[nn.Module]:
    """The conv/linear layers of `module` that run on `images`, in the order they run."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod) if mod not in order else None)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = module.training
    module.eval()
    try:
        (forward or module)(images)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return order


@torch.no_grad()
def data_dependent_rescale_(
    encoder: nn.Module,
    images: torch.Tensor,
    eps: float = 1e-8,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Within-layer data-dependent init (Krähenbühl et al. 2016): unit-variance, zero-mean channels.

    Layers are visited in the order they run on `images`; each is calibrated with all earlier
    layers already rescaled, so every layer sees the distribution it will see at the start of
    training. BatchNorm is run in eval mode (its running statistics are the identity at init).
    `forward` (default: the module itself) is the pass to calibrate, e.g. encoder + new fc layers.
    """
    order = run_order(encoder, images, forward)
    was_training = encoder.training
    encoder.eval()
    for layer in order:
        stats: list[tuple[torch.Tensor, torch.Tensor]] = []

        def grab(_m, _i, out: torch.Tensor, box=stats) -> None:
            # statistics now: an in-place activation (ReLU(inplace=True)) overwrites `out` next
            dims = [d for d in range(out.dim()) if d != 1] if out.dim() > 2 else [0]
            box.append((out.mean(dim=dims), out.std(dim=dims)))
            raise _StopForward

        hook = layer.register_forward_hook(grab)
        try:
            (forward or encoder)(images)
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


def layer_change_rates(
    module: nn.Module,
    images: torch.Tensor,
    layers: list[nn.Module] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    draws: int = 4,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Relative rate of change C_k = E||dl/dW_k||^2 / ||W_k||^2 of every conv/linear layer.

    The loss is Krähenbühl et al.'s random one: l = <z, output> with z ~ N(0, 1) of the output's
    shape (the released magic_init fills the top gradient with unit Gaussian noise), so no labels
    are needed. Summing over the batch is enough: for independent zero-mean z the cross terms
    vanish in expectation, so ||grad of the batch sum||^2 estimates N * E||grad of one image||^2,
    the same factor N for every layer. Averaged over `draws` draws of z; eval mode (BatchNorm at
    its running statistics, no dropout), as in the within-layer step.
    """
    layers = layers if layers is not None else run_order(module, images, forward)
    weights = [layer.weight for layer in layers]
    flags = [w.requires_grad for w in weights]
    was_training = module.training
    module.eval()
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            out = (forward or module)(images)
            sq = torch.zeros(len(weights), dtype=torch.float64)
            for d in range(draws):
                z = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
                grads = torch.autograd.grad(
                    (out * z).sum(), weights, retain_graph=d < draws - 1, allow_unused=True
                )
                sq += torch.tensor(
                    [0.0 if g is None else g.double().pow(2).sum().item() for g in grads],
                    dtype=torch.float64,
                )
    finally:
        for w, f in zip(weights, flags, strict=True):
            w.requires_grad_(f)
        module.train(was_training)
    norms = [w.detach().double().pow(2).sum().item() for w in weights]
    return [
        (s / draws) / n if n > 0 else float("nan") for s, n in zip(sq.tolist(), norms, strict=True)
    ]


@torch.no_grad()
def _scale_layers_(
    module: nn.Module,
    images: torch.Tensor,
    layers: list[nn.Module],
    factors: list[float],
    forward: Callable | None,
) -> None:
    """W_k, b_k *= factor_k, with b_k also following the change of scale of layer k's input.

    For a network of positively homogeneous layers (ReLU, max pooling) the input of layer k
    is scaled by the product of the earlier factors; scaling b_k by that too keeps layer k's
    output exactly the scaled version of the old one, so the network computes the same function
    up to the product of all factors. The input's change is measured (mean |x| before / after),
    which also covers layers that are not homogeneous (LRN) approximately, as the released
    magic_init does."""
    run = forward or module
    was_training = module.training
    module.eval()
    before: dict[nn.Module, float] = {}

    def record(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        before.setdefault(m, inp[0].abs().mean().item())

    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        run(images)
    finally:
        for h in hooks:
            h.remove()
    factor = dict(zip(layers, factors, strict=True))
    done: set[nn.Module] = set()

    def rescale(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        if m in done:
            return
        done.add(m)
        if m.bias is not None and before[m] > 0:
            m.bias.mul_(inp[0].abs().mean().item() / before[m])
        m.weight.mul_(factor[m])
        if m.bias is not None:
            m.bias.mul_(factor[m])

    hooks = [layer.register_forward_pre_hook(rescale) for layer in layers]
    try:
        run(images)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)


def _log_spread(rates: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log C_k - log of their geometric mean, mask of the usable layers)."""
    r = torch.tensor(rates, dtype=torch.float64)
    ok = torch.isfinite(r) & (r > 0)
    logs = torch.where(ok, r.clamp(min=1e-300).log(), torch.zeros_like(r))
    mean = logs[ok].mean() if ok.any() else torch.tensor(0.0, dtype=torch.float64)
    return torch.where(ok, logs - mean, torch.zeros_like(r)), ok


def between_layer_rescale_(
    module: nn.Module,
    images: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    iterations: int = 10,
    damping: float = 0.5,
    draws: int = 4,
    tolerance: float = 0.02,
    seed: int = 0,
) -> dict[str, Any]:
    """Between-layer scale adjustment of Krähenbühl et al. (ICLR 2016, Algorithm 2).

    Each iteration estimates every conv/linear layer's C_k (`layer_change_rates`), takes their
    geometric mean C, and multiplies W_k and b_k by r_k = (C_k / C)^(damping / 4) (b_k also by
    the change of its input's scale, `_scale_layers_`). In a homogeneous network rescaling W_k by
    r_k alone multiplies C_k by r_k^-4, and the product of the r_k is 1, so the output's scale is
    kept and damping = 1 would equalise the C_k in one step; the damping (< 1, the paper's alpha;
    in the released code's terms r_k = (sqrt(C_k) / sqrt(C))^(alpha / 2)) absorbs the non-homogeneous
    layers and the noise of the estimate. Stops after `iterations` or once every |log C_k - log C|
    is below `tolerance`. Returns {"iterations", "spread_before", "spread_after"}: max C_k / min C_k.
    """
    gen = torch.Generator().manual_seed(seed)
    layers = run_order(module, images, forward)
    rates = layer_change_rates(module, images, layers, forward, draws, gen)
    dev, ok = _log_spread(rates)
    spread_before = float((dev[ok].max() - dev[ok].min()).exp()) if ok.any() else 1.0
    done = 0
    while done < iterations and ok.any() and dev[ok].abs().max() >= tolerance:
        factors = (dev * damping / 4).exp().tolist()
        _scale_layers_(module, images, layers, factors, forward)
        done += 1
        rates = layer_change_rates(module, images, layers, forward, draws, gen)
        dev, ok = _log_spread(rates)
    return {
        "iterations": done,
        "damping": damping,
        "layers": len(layers),
        "spread_before": round(spread_before, 4),
        "spread_after": round(float((dev[ok].max() - dev[ok].min()).exp()) if ok.any() else 1.0, 4),
    }


def rescale_(
    module: nn.Module,
    images: torch.Tensor,
    mode: str,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Apply `mode` ("within" or "full", see the module docstring) in place; returns what was done."""
    if mode not in ("within", "full"):
        raise ConfigError(
            f"config key 'rescale' must be one of {list(RESCALE_MODES)}, got {mode!r}"
        )
    data_dependent_rescale_(module, images, forward=forward)
    record: dict[str, Any] = {"mode": mode, "calibration_images": len(images)}
    if mode == "full":
        record["between"] = between_layer_rescale_(module, images, forward, seed=seed)
    return record


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
    if mode != "none":
        if callable(calibration_images):
            calibration_images = calibration_images(size)
        if calibration_images is None or len(calibration_images) < 2:
            raise ConfigError(
                f"encoder spec '{spec}' with rescale '{mode}' needs a batch of training images to rescale on"
            )
        images = renormalize(calibration_images, info["normalize"])
        dev = torch.device(device) if device is not None else torch.device("cpu")
        record = rescale_(encoder.to(dev), images.to(dev), mode, seed=seed)
        encoder.cpu()
        info["meta"] = {**info["meta"], "rescale": record}
        if kind == "random-rescaled" and sep:
            info["meta"]["calibration_images"] = len(images)
    else:
        info["meta"] = {**info["meta"], "rescale": {"mode": "none"}}
    info.update(spec=spec, input_size=size, hash=weights_hash(encoder))
    return encoder, EncoderInfo.from_dict(info)


def renormalize(images: torch.Tensor, normalize: dict[str, list[float]]) -> torch.Tensor:
    """A batch in [-1, 1] (the calibration convention) -> normalised by `normalize`."""
    if normalize == MINUS_ONE_ONE:
        return images
    mean = torch.tensor(normalize["mean"], dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(normalize["std"], dtype=images.dtype).view(1, -1, 1, 1)
    return (images * 0.5 + 0.5 - mean) / std
