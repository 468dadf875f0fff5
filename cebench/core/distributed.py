"""Several training processes (torchrun): process group, gradient averaging, synchronised BatchNorm.

    torchrun --nproc_per_node 2 -m cebench.pretrain.train --data DIR --out RUN   # or `cebench pretrain` under torchrun

`init_from_env()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK and joins the group (nccl on
CUDA, gloo on CPU). Gradients are averaged with one flattened all-reduce per optimizer step
(`average_gradients`) instead of wrapping the models in DistributedDataParallel: a GAN step calls
the discriminator several times per backward and back-propagates the generator loss through it
without updating it, which DDP's hooks do not model; an explicit all-reduce after `backward()` is
the same arithmetic (mean of per-process gradients) and always correct.

BatchNorm: per-process batch statistics differ from the statistics of the whole global batch, so
`convert_sync_batchnorm` swaps every BatchNorm for one whose statistics are reduced over all
processes (torch's SyncBatchNorm on CUDA; `GlobalBatchNorm` here on CPU, where torch's version is
not implemented). With it, N processes x batch b compute the same thing as 1 process x batch N*b.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    """Mean of every parameter's gradient over processes, with one flattened all-reduce."""
    if world_size <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy; no-op in one process). Not differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def any_process(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any process (so every process stops at the same step)."""
    t = all_reduce_sum(torch.tensor([1.0 if flag else 0.0], device=device))
    return bool(t.item() > 0)


def broadcast_object(obj: object, src: int = 0) -> object:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: object) -> list[object]:
    """Every process's `obj`, in rank order (just [obj] in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all processes.

    Sums and sums of squares are all-reduced with a differentiable all-reduce (its backward
    all-reduces the gradient), so the backward pass matches one process with the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / c, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
                self.num_batches_tracked.add_(1)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Swap BatchNorm2d layers for process-synchronised ones (state dict keys unchanged)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu(child))
    return module
