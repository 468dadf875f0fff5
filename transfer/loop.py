"""Shared pieces of the transfer harnesses: seeding, optimisers, the epoch loop, run outputs.

    set_seed(cfg.seed)
    opt = make_optimizer(params, "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt = make_optimizer(bias_lr_groups(model, 2.0), "sgd", lr=0.01)  # biases at 2x the lr
    stats = train_one_epoch(model, batches, loss_fn, opt, device)   # {"loss": mean loss}
    write_run(out, metrics, cfg, info, start)                      # metrics.json + config.yaml

`train_one_epoch` is the torchvision references' loop reduced to what the three harnesses share:
`loss_fn(model, batch, device) -> scalar loss`, so each harness says how a batch becomes a loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cebench.core.config import save_resolved
from cebench.core.device import describe
from cebench.core.errors import TrainingError
from cebench.core.io import atomic_write_text
from cebench.core.logger import Heartbeat
from cebench.core.provenance import git_commit


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(
    model: nn.Module,
    weight_decay: float | None,
    bias_lr: float = 1.0,
    bias_decay: bool = True,
    is_bias: Callable[[str], bool] | None = None,
    frozen: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Caffe-style per-parameter learning rates: the trainable parameters of `model` as optimizer
    groups, biases (`is_bias(name)`, default: names ending in "bias") at `bias_lr` times the lr
    and with weight decay only if `bias_decay`, the rest at the lr with `weight_decay`.
    Parameters under a `frozen` prefix (e.g. "backbone.encoder.stages.conv1.") get lr 0: they
    are left out of the optimizer and stop taking gradients. Give the result to `make_optimizer`,
    which turns each group's "lr_mult" into its lr. `weight_decay=None`: the optimizer's own."""
    is_bias = is_bias or (lambda n: n == "bias" or n.endswith(".bias"))
    prefixes = tuple(frozen)
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if prefixes and name.startswith(prefixes):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        (biases if is_bias(name) else weights).append(p)
    def decay(value: float | None) -> dict[str, float]:
        return {} if value is None else {"weight_decay": value}

    groups = [{"params": weights, "lr_mult": 1.0, **decay(weight_decay)}]
    if biases:
        groups.append(
            {"params": biases, "lr_mult": bias_lr, **decay(weight_decay if bias_decay else 0.0)}
        )
    return groups


def bias_lr_groups(module: nn.Module, bias_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """Parameter groups for `make_optimizer`: the biases of conv/linear layers at `bias_lr_mult`
    times the lr (Caffe's lr_mult 1 / 2 of the weights / biases in Krähenbühl et al.'s and Fast
    R-CNN's solvers), everything else at the lr, with the optimizer's weight decay."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    names = {
        f"{n}.bias" if n else "bias"
        for n, m in module.named_modules()
        if isinstance(m, layers) and m.bias is not None
    }
    return param_groups(module, None, bias_lr=bias_lr_mult, is_bias=names.__contains__)


def make_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """The optimizer `name` over `params`: parameters, or the groups of `param_groups` /
    `bias_lr_groups` (each at lr x its "lr_mult", with its own weight decay if it sets one);
    parameters without gradients (frozen) are left out. The schedulers scale every group's lr
    alike, so the multipliers hold throughout."""
    items = list(params)
    if items and isinstance(items[0], dict):
        params = []
        for g in items:
            kept = [p for p in g["params"] if p.requires_grad]
            if kept:
                rest = {k: v for k, v in g.items() if k not in ("params", "lr_mult")}
                params.append({**rest, "params": kept, "lr": lr * g.get("lr_mult", 1.0)})
    else:
        params = [p for p in items if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise TrainingError(f"unknown optimizer '{name}' (sgd, adam, adamw)")


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any, torch.device], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str = "train",
    clip_grad_norm: float = 0.0,
) -> dict[str, float]:
    """One pass; returns the mean loss. A non-finite loss stops training with a TrainingError.
    `clip_grad_norm` > 0 rescales the gradients so their joint L2 norm is at most that (Caffe's
    `clip_gradients`, applied before the weight decay as there).

    When stderr is not a terminal, a `Heartbeat` line (batch, loss, images/s, epoch eta) goes to
    stderr every 30 s, so a long epoch is not silent."""
    total, count = 0.0, 0
    beat = Heartbeat(desc, total=len(batches) if hasattr(batches, "__len__") else None)
    for batch in batches:
        loss = loss_fn(model, batch, device)
        if not math.isfinite(loss.item()):
            raise TrainingError(f"loss became {loss.item()} (lower the learning rate)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        count += 1
        beat.tick(images=_batch_images(batch), loss=total / count)
    return {"loss": total / max(count, 1)}


def train_epochs(
    model, loader, loss_fn, opt, device, scheduler, epochs: int, log, clip_grad_norm: float = 0.0
) -> None:
    """`epochs` passes of `train_one_epoch` in train mode, one log line (loss, lr) per epoch."""
    for epoch in range(epochs):
        model.train()
        stats = train_one_epoch(
            model, loader, loss_fn, opt, device, scheduler, clip_grad_norm=clip_grad_norm
        )
        log.update(epoch + 1, loss=stats["loss"], lr=opt.param_groups[0]["lr"])


def _batch_images(batch: Any) -> int:
    """Images in a batch: (images, targets) with a tensor or a list of images first."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    try:
        return len(first)
    except TypeError:
        return 0


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (BatchNorm statistics fixed) for a frozen encoder."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


def write_run(
    out: Path,
    task: str,
    metrics: dict[str, Any],
    cfg: Any,
    info: dict[str, Any],
    device: torch.device,
    start: float,
) -> dict[str, Any]:
    """Write metrics.json (metrics, resolved config, seed, wall time, device, encoder) and config.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "task": task,
        "metrics": metrics,
        "config": dataclasses.asdict(cfg),
        "seed": cfg.seed,
        "wall_time_s": round(time.time() - start, 3),
        "device": describe(device),
        "encoder": {k: v for k, v in info.as_dict().items() if k != "meta"}
        | {"meta": _plain(info.meta)},
        "commit": git_commit(),
    }
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=str) + "\n")
    save_resolved(cfg, out / "config.yaml")
    return record


def _plain(obj: Any) -> Any:
    """JSON-safe copy of checkpoint meta (drops tensors)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else str(obj)
