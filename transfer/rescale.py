"""Data-dependent rescaling of Krähenbühl et al. (ICLR 2016, arXiv 1511.06856), as magic_init.py runs it.

    record = rescale_(net, images, "full", forward=net.features, trained=encoder_layers)

Two steps, on a batch of real training images (the harness's `calibration_images`):
- within-layer (`data_dependent_rescale_`): only FRESH layers, in the order they run. A fresh
  layer whose weights are all zero is first drawn from N(0, 1) (the reference's "elwise" fill);
  then each output channel k is scaled to unit standard deviation over the batch and positions,
  and its bias set so the channel's mean is `FRESH_BIAS` (0.1, magic_init's `-b` default):
  W_k /= std_k, b_k = (b_k - mean_k) / std_k + 0.1. Trained layers are skipped (the reference
  initialises only the zero layers of a loaded model), but the forward pass runs through them.
- between-layer (`between_layer_rescale_`, their Algorithm 2, magic_init's `calibrateGradientRatio`):
  over ALL conv/linear layers. With a unit-Gaussian gradient on the output, each layer's ratio
  r_k = sqrt(mean (dL/dW_k)^2 / mean W_k^2) is measured; the target is their geometric mean times
  the output's standard deviation to the power 1/L (which drives the output's scale to 1), and
  W_k, b_k are multiplied by sqrt(r_k / target), b_k also by the change of scale of layer k's input
  (mean |x|) since the previous pass. Up to 10 iterations, stopping when every
  |log r_k / log target - 1| < 0.01.
Both steps run as the reference's Caffe TRAIN net: dropout on (`calibration_mode`; BatchNorm, which
the reference does not support and AlexNet lacks, stays at its running statistics), with the
dropout masks drawn from a generator seeded by `seed`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from cebench.core.errors import ConfigError

RESCALE_MODES = ("none", "within", "full")
FRESH_BIAS = 0.1  # magic_init.py: -b/--bias, default 0.1 (the mean of every fresh channel)
PARAM_LAYERS = (nn.Conv2d, nn.Linear)


class _StopForward(Exception):
    """Ends a calibration forward pass once the layer being rescaled has run."""


@contextlib.contextmanager
def calibration_mode(module: nn.Module) -> Iterator[None]:
    """Train mode (dropout on, as the reference's Caffe TRAIN net) with BatchNorm layers in eval
    mode (their running statistics, not updated); every module's mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.train()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def run_order(
    module: nn.Module, images: torch.Tensor, forward: Callable | None = None
) -> list[nn.Module]:
    """The conv/linear layers of `module` that run on `images`, in the order they run (one pass in
    the module's current mode)."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod) if mod not in order else None)
        for m in module.modules()
        if isinstance(m, PARAM_LAYERS)
    ]
    try:
        (forward or module)(images)
    finally:
        for h in hooks:
            h.remove()
    return order


def _channel_stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and population std over the batch and positions (numpy's std)."""
    flat = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 1 else out.view(1, -1)
    return flat.mean(1), flat.std(1, unbiased=False)


@torch.no_grad()
def data_dependent_rescale_(
    module: nn.Module,
    images: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    layers: Iterable[nn.Module] | None = None,
    bias: float = FRESH_BIAS,
    eps: float = 1e-8,
) -> int:
    """The within-layer step on `layers` (default: every conv/linear layer), in run order; returns
    how many layers it rescaled. Each is calibrated with the earlier ones already rescaled, so it
    sees the distribution it will see at the start of training. Runs in the caller's mode."""
    order = run_order(module, images, forward)
    chosen = set(order if layers is None else layers)
    done = 0
    for layer in order:
        if layer not in chosen:
            continue
        if layer.weight.abs().sum() <= 1e-10:  # a zero layer: magic_init's elwise draw first
            layer.weight.normal_(0, 1)
        stats: list[tuple[torch.Tensor, torch.Tensor]] = []

        def grab(_m, _i, out: torch.Tensor, box=stats) -> None:
            # statistics now: an in-place activation (ReLU(inplace=True)) overwrites `out` next
            box.append(_channel_stats(out))
            raise _StopForward

        hook = layer.register_forward_hook(grab)
        try:
            (forward or module)(images)
        except _StopForward:
            pass
        finally:
            hook.remove()
        mean, std = stats[0]
        scale = 1.0 / (std + eps)
        layer.weight.mul_(scale.view((-1,) + (1,) * (layer.weight.dim() - 1)))
        if layer.bias is not None:
            layer.bias.copy_((layer.bias - mean) * scale + bias)
        done += 1
    return done


def layer_change_rates(
    module: nn.Module,
    images: torch.Tensor,
    layers: list[nn.Module] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    draws: int = 1,
    generator: torch.Generator | None = None,
) -> list[float]:
    """C_k = mean (dl/dW_k)^2 / mean W_k^2 of every conv/linear layer (the square of magic_init's
    gradient ratio), in the module's current mode.

    The loss is Krähenbühl et al.'s random one: l = <z, output> with z ~ N(0, 1) of the output's
    shape (magic_init fills the top gradient with unit Gaussian noise), so no labels are needed;
    averaged over `draws` draws of z (the reference: 1)."""
    layers = layers if layers is not None else run_order(module, images, forward)
    weights = [layer.weight for layer in layers]
    flags = [w.requires_grad for w in weights]
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
    norms = [w.detach().double().pow(2).sum().item() for w in weights]
    return [
        (s / draws) / n if n > 0 else float("nan") for s, n in zip(sq.tolist(), norms, strict=True)
    ]


def _output_std(out: torch.Tensor) -> float:
    """magic_init's output scale: the per-channel std of the top, averaged over channels."""
    return _channel_stats(out.detach().float())[1].mean().item()


@torch.no_grad()
def _scale_pass(
    run: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    layers: list[nn.Module],
    factors: list[float] | None,
    bottom: dict[nn.Module, float],
) -> float:
    """One forward pass; before each layer runs, its bias follows the change of its input's mean
    |x| since `bottom` was recorded and (with `factors`) W, b are multiplied by its factor. Returns
    the output's std."""
    factor = dict(zip(layers, factors or [1.0] * len(layers), strict=True))
    seen: set[nn.Module] = set()

    def pre(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        if m in seen:
            return
        seen.add(m)
        now = inp[0].abs().mean().item()
        if factors is not None:
            if m.bias is not None and bottom.get(m, 0) > 0:
                m.bias.mul_(now / bottom[m])
            m.weight.mul_(factor[m])
            if m.bias is not None:
                m.bias.mul_(factor[m])
        bottom[m] = now

    hooks = [layer.register_forward_pre_hook(pre) for layer in layers]
    try:
        out = run(images)
    finally:
        for h in hooks:
            h.remove()
    return _output_std(out)


def between_layer_rescale_(
    module: nn.Module,
    images: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    iterations: int = 10,
    draws: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """magic_init's between-layer step (module docstring) over every conv/linear layer, in the
    module's current mode. Returns {"iterations", "layers", "spread_before", "spread_after"}: the
    spreads are max C_k / min C_k (C_k = r_k^2) before the first and after the last iteration."""
    gen = torch.Generator().manual_seed(seed)
    run = forward or module
    layers = run_order(module, images, forward)
    bottom: dict[nn.Module, float] = {}
    out_std = _scale_pass(run, images, layers, None, bottom)
    spreads: list[float] = []
    done = 0
    while True:
        rates = torch.tensor(
            layer_change_rates(module, images, layers, forward, draws, gen), dtype=torch.float64
        )
        ok = torch.isfinite(rates) & (rates > 0)
        spreads.append(float(rates[ok].max() / rates[ok].min()) if ok.any() else 1.0)
        if done >= iterations or not ok.any():
            break
        log_r = 0.5 * rates[ok].log()
        log_target = log_r.mean() + math.log(max(out_std, 1e-12)) / len(log_r)
        if bool(((log_r / log_target - 1).abs() < 0.01).all()):
            break
        log_factors = torch.zeros_like(rates)
        log_factors[ok] = 0.5 * (log_r - log_target)
        out_std = _scale_pass(run, images, layers, log_factors.exp().tolist(), bottom)
        done += 1
    return {
        "iterations": done,
        "layers": len(layers),
        "spread_before": round(spreads[0], 4),
        "spread_after": round(spreads[-1], 4),
    }


def rescale_(
    module: nn.Module,
    images: torch.Tensor,
    mode: str,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    trained: Iterable[nn.Module] = (),
) -> dict[str, Any]:
    """Apply `mode` ("within" or "full") in place; the layers in `trained` skip the within-layer
    step (the between-layer step takes every layer). Returns what was done."""
    if mode not in ("within", "full"):
        raise ConfigError(
            f"config key 'rescale' must be one of {list(RESCALE_MODES)}, got {mode!r}"
        )
    skip = set(trained)
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), calibration_mode(module):
        torch.manual_seed(seed)  # the dropout masks of the calibration passes
        layers = run_order(module, images, forward)
        fresh = [layer for layer in layers if layer not in skip]
        data_dependent_rescale_(module, images, forward, fresh)
        record: dict[str, Any] = {
            "mode": mode,
            "calibration_images": len(images),
            "within_layers": len(fresh),
            "trained_layers": len(layers) - len(fresh),
        }
        if mode == "full":
            record["between"] = between_layer_rescale_(module, images, forward, seed=seed)
    return record
