"""One optimisation step of each pretraining method, as small functions returning metric dicts.

    hole = batch_masks(cfg, step, global_batch, rank, world_size, device)
    m = context_encoder_step(parts, images, hole, fill, world_size=1)   # {"loss_rec": ..., "loss": ...}
    m = supervised_step(net, opt, images, labels, world_size=1)        # {"loss": ..., "acc": ...}

Metric values are detached 0-d tensors (no device sync per step); the caller stacks them and
copies them to the host once per log interval. Under several processes every value is the
process's share such that the *mean over processes* is the value of the whole global batch, and
gradients are averaged over processes (`cebench.core.distributed.average_gradients`), so N processes
x batch b follow the same trajectory as 1 process x batch N*b.

Context encoder step (released code's order): the generator predicts the region once; the
discriminator is updated on (real region, detached prediction); then the generator is updated on
lambda_rec * L_rec + lambda_adv * L_adv with the updated discriminator. With lambda_adv = 0 there is
no discriminator at all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.distributed import all_reduce_sum, average_gradients
from cebench.pretrain.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
    reconstruction_loss,
)
from cebench.pretrain.masks import fill_holes, make_masks, region_loss_weights
from cebench.pretrain.train_data import _seed


@dataclass
class GANParts:
    """The networks and optimizers of a context-encoder run (disc/opt_d None for L2 only)."""

    net: nn.Module
    opt: torch.optim.Optimizer
    disc: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    overlap: int = 4
    border_weight: float = 10.0
    weighting: str = "overlap"  # resolved loss.region_weighting (masks.resolve_region_weighting)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on the device when enabled (no GradScaler needed for bf16)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def batch_masks(
    kind: str,
    *,
    size: int,
    region: int,
    overlap: int,
    coverage: float,
    step: int,
    seed: int,
    global_batch: int,
    rank: int,
    world_size: int,
    device: torch.device,
    shapes: torch.Tensor | None = None,
) -> torch.Tensor:
    """This process's slice of the global batch's masks for `step`, made on the training device.

    The generator is seeded from (seed, step), so the masks do not depend on how many processes
    share the batch, nor on whether the run was resumed."""
    gen = torch.Generator(device=device).manual_seed(_seed(seed, step, 11))
    hole = make_masks(
        kind,
        global_batch,
        size,
        region=region,
        overlap=overlap,
        coverage=coverage,
        shapes=shapes,
        generator=gen,
        device=device,
    )
    local = global_batch // world_size
    return hole[rank * local : (rank + 1) * local]


def region_target(
    images: torch.Tensor,
    hole: torch.Tensor,
    out: int,
    overlap: int,
    border_weight: float,
    autoencoder: bool,
    weighting: str = "overlap",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, weights) for a prediction of side `out`: the centre region, or the whole image.
    `weighting`: "overlap", "hole" or "whole" (`cebench.pretrain.masks.region_loss_weights`)."""
    if autoencoder:
        weights = torch.ones_like(hole, dtype=torch.float32)
    else:
        weights = region_loss_weights(hole, weighting, overlap, border_weight)
    size = images.shape[-1]
    if out != size:
        off = (size - out) // 2
        return images[..., off : off + out, off : off + out], weights[
            ..., off : off + out, off : off + out
        ]
    return images, weights


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def context_encoder_step(
    parts: GANParts,
    images: torch.Tensor,
    hole: torch.Tensor,
    fill: torch.Tensor,
    *,
    autoencoder: bool = False,
    world_size: int = 1,
    bf16: bool = False,
) -> dict[str, torch.Tensor]:
    """One step of context-encoder (or autoencoder) training; returns detached metric tensors."""
    device = images.device
    masked = fill_holes(images, hole, fill)
    with autocast(device, bf16):
        pred = parts.net(masked)
    pred = pred.float()
    target, weights = region_target(
        images,
        hole,
        pred.shape[-1],
        parts.overlap,
        parts.border_weight,
        autoencoder,
        parts.weighting,
    )

    # L_rec is a weighted mean over the predicted pixels of the *global* batch: scale this
    # process's mean by its share of those pixels (x world_size, since gradients are averaged).
    share = torch.ones((), device=device)
    if world_size > 1:
        n_local = (weights > 0).sum().float()
        share = n_local * world_size / all_reduce_sum(n_local).clamp(min=1)

    metrics: dict[str, torch.Tensor] = {}
    if parts.disc is not None and parts.opt_d is not None:
        parts.opt_d.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            real_logits = parts.disc(target)
            fake_logits = parts.disc(pred.detach())
        loss_d = discriminator_loss(real_logits.float(), fake_logits.float())
        loss_d.backward()
        average_gradients(list(parts.disc.parameters()), world_size)
        parts.opt_d.step()
        metrics["loss_d"] = loss_d.detach()

    parts.opt.zero_grad(set_to_none=True)
    rec = reconstruction_loss(pred, target, weights) * share
    if parts.disc is not None:
        _set_requires_grad(parts.disc, False)  # the generator step must not touch D's gradients
        with autocast(device, bf16):
            adv = generator_adversarial_loss(parts.disc(pred).float())
        _set_requires_grad(parts.disc, True)
        loss = joint_loss(rec, adv, parts.lambda_rec, parts.lambda_adv)
        metrics["loss_adv_g"] = adv.detach()
    else:
        loss = parts.lambda_rec * rec
    loss.backward()
    average_gradients(list(parts.net.parameters()), world_size)
    parts.opt.step()
    metrics["loss_rec"] = rec.detach()
    metrics["loss"] = loss.detach()
    return metrics


def supervised_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    world_size: int = 1,
    bf16: bool = False,
) -> dict[str, torch.Tensor]:
    """One cross-entropy step of the supervised baseline (equal per-process batches: plain mean)."""
    opt.zero_grad(set_to_none=True)
    with autocast(images.device, bf16):
        logits = net(images)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    average_gradients(list(net.parameters()), world_size)
    opt.step()
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return {"loss": loss.detach(), "acc": acc}
