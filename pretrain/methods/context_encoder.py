"""The context encoder (Pathak et al., CVPR 2016): inpaint the dropped region from its context.

    cebench pretrain --data DIR --method context-encoder --mask random-region --out runs/ce

Networks: encoder -> channel-wise FC (or the released conv bottleneck) -> up-convolutional
decoder (`cebench.pretrain.models.build_context_encoder`), plus the discriminator when
`loss.lambda_adv > 0`. Loss: lambda_rec * masked L2 (`loss.region_weighting`: by default the
paper's, the dropped region with the overlap band weighted `mask.border_weight` for centre and
random-block masks, the dropped pixels only for random regions) + lambda_adv * adversarial; the
released code's lr rule (10x lr_d under the joint loss).

The step (released code's order): the generator predicts the region once; the discriminator is
updated on (real region, detached prediction); then the generator is updated on
lambda_rec * L_rec + lambda_adv * L_adv with the updated discriminator. With lambda_adv = 0 there is
no discriminator at all.

    m = context_encoder_step(parts, images, hole, fill, world_size=1)   # {"loss_rec": ..., "loss": ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cebench.core.distributed import all_reduce_sum, average_gradients
from cebench.core.errors import ConfigError
from cebench.pretrain.graph_step import WARMUP_STEPS
from cebench.pretrain.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
    reconstruction_loss,
)
from cebench.pretrain.masks import (
    batch_masks,
    check_shape_bank,
    fill_holes,
    load_shape_bank,
    mask_draw_shapes,
    masks_from_draws,
    region_loss_weights,
    resolve_region_weighting,
)
from cebench.pretrain.methods.base import PretrainMethod, autocast, register_method
from cebench.pretrain.models import build_context_encoder, build_discriminator
from cebench.pretrain.samples import composite
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


@register_method("context-encoder")
class ContextEncoder(PretrainMethod):
    needs_mask = True
    inpaints = True
    centre_config = "paper-inpainting"  # the paper's inpainting network for its default mask
    reconstruct_all = False  # the autoencoder subclass sets True: loss on every pixel
    graphable = True  # train.cuda_graph: `graphed_step` below

    @classmethod
    def check(cls, cfg: Any) -> None:
        super().check(cfg)
        if cfg.model.predict == "region":
            if cfg.mask.kind != "center":
                raise ConfigError(
                    f"model.predict=region predicts the centre region; mask.kind={cfg.mask.kind} "
                    "needs model.predict=image and model.output_size=model.input_size"
                )
            region = cfg.mask.region or cfg.model.input_size // 2
            if region != cfg.model.output_size:
                raise ConfigError(
                    f"mask.region ({region}) must equal model.output_size "
                    f"({cfg.model.output_size}) when model.predict=region"
                )

    @classmethod
    def default_lr(cls, cfg: Any) -> float:
        """The released code's rule: 10x the discriminator's lr under the joint loss
        (0 < lambda_rec < 1 and lambda_adv > 0), else equal to it."""
        joint = 0 < cfg.loss.lambda_rec < 1 and cfg.loss.lambda_adv > 0
        return cfg.optim.lr_d * (10.0 if joint else 1.0)

    def build(self) -> None:
        cfg = self.cfg
        net = build_context_encoder(cfg.model)
        self.enc_name, self.enc_kwargs = net.encoder_name, net.encoder_kwargs
        disc = build_discriminator(cfg.model) if self.adversarial(cfg) else None
        self.models["net"] = self.prepare(net)
        self.optims["net"] = self.adam(self.models["net"], cfg.optim.lr)
        if disc is not None:
            self.models["disc"] = self.prepare(disc)
            self.optims["disc"] = self.adam(self.models["disc"], cfg.optim.lr_d)
        self.parts = GANParts(
            self.models["net"],
            self.optims["net"],
            self.models.get("disc"),
            self.optims.get("disc"),
            lambda_rec=1.0 if self.reconstruct_all else cfg.loss.lambda_rec,
            lambda_adv=cfg.loss.lambda_adv,
            overlap=cfg.mask.overlap,
            border_weight=cfg.mask.border_weight,
            weighting=resolve_region_weighting(cfg.loss.region_weighting, cfg.mask.kind),
        )
        fill = cfg.data.fill_value or [0.5] * 3
        self.fill = torch.tensor(fill, device=self.device) * 2 - 1  # [0,1] -> [-1,1]
        # random regions shaped as the VOC objects under mask.shapes (the paper), if set
        self.shapes: torch.Tensor | None = self.mask_shapes()
        self.hole: torch.Tensor | None = None

    def mask_shapes(self) -> torch.Tensor | None:
        """The object-shape bank of `mask.kind=random-region` with `mask.shapes` set, else None."""
        m = self.cfg.mask
        if m.kind != "random-region" or not m.shapes:
            return None
        return load_shape_bank(m.shapes, m.shapes_split, m.shapes_max_images, self.device)

    def graphed_step(self, capture: bool = True) -> GraphedStep:
        return GraphedStep(self, capture=capture)

    @classmethod
    def adversarial(cls, cfg: Any) -> bool:
        return cfg.loss.lambda_adv > 0

    @classmethod
    def inpaint_refusal(cls, cfg: Any) -> str | None:
        return None

    @classmethod
    def inpainting_network(cls, cfg: Any) -> nn.Module:
        return build_context_encoder(cfg.model)

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.hole = batch_masks(
            cfg.mask.kind,
            size=cfg.model.input_size,
            region=cfg.mask.region or cfg.model.input_size // 2,
            overlap=cfg.mask.overlap,
            coverage=cfg.mask.coverage,
            step=step,
            seed=cfg.train.seed,
            global_batch=cfg.train.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            device=self.device,
            shapes=self.shapes,
        )
        return context_encoder_step(
            self.parts,
            images,
            self.hole,
            self.fill,
            autoencoder=self.reconstruct_all,
            world_size=self.dist.world_size,
            bf16=self.bf16,
        )

    def sample_rows(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Masked input / prediction composited into the context / ground truth (8 images)."""
        if self.hole is None:
            return None
        net = self.models["net"]
        net.eval()  # eval: no BatchNorm statistics update, no collective in synchronised BN
        with torch.no_grad():
            x, h = images[:8], self.hole[:8]
            masked = torch.where(h, self.fill.view(1, 3, 1, 1), x)
            pred = net(masked).float()
        net.train()
        return [masked, composite(x, h, pred), x]

    def encoder(self) -> tuple[nn.Module, str, dict[str, Any]]:
        return self.models["net"].encoder, self.enc_name, self.enc_kwargs


class GraphedStep:
    """`method.step` (a ContextEncoder) as static buffers + one captured graph
    (cebench.pretrain.graph_step's module doc).

    capture=False runs the same static-buffer step eagerly every time: what the CPU tests check
    against the eager `method.step`."""

    def __init__(
        self, method: ContextEncoder, capture: bool = True, warmup: int = WARMUP_STEPS
    ) -> None:
        cfg = method.cfg
        self.method, self.capture, self.warmup = method, capture, warmup
        self.device = method.device
        self.size = cfg.model.input_size
        self.batch = cfg.train.batch_size  # one process: the global batch
        if cfg.mask.kind == "random-region" and method.shapes is not None:
            check_shape_bank(method.shapes)  # a host sync: never inside the capture
        self.draw_shapes = mask_draw_shapes(
            cfg.mask.kind, self.batch, self.size, shapes=method.shapes
        )
        self.images: torch.Tensor | None = None
        self.draws: list[torch.Tensor] = []
        self.graph: Any = None
        self.out: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self.calls = 0
        # Adam's step count on the device, updated by the graph (fused Adam: same arithmetic)
        for opt in method.optims.values():
            for group in opt.param_groups:
                group["capturable"] = True

    def _body(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Everything after the draws: what the graph holds."""
        m, cfg = self.method, self.method.cfg
        hole = masks_from_draws(
            cfg.mask.kind,
            self.draws,
            self.batch,
            self.size,
            region=cfg.mask.region or self.size // 2,
            overlap=cfg.mask.overlap,
            coverage=cfg.mask.coverage,
            shapes=m.shapes,
            device=self.device,
        )
        metrics = context_encoder_step(
            m.parts,
            self.images,
            hole,
            m.fill,
            autoencoder=m.reconstruct_all,
            world_size=1,
            bf16=m.bf16,
        )
        return hole, metrics

    def _fill_inputs(self, images: torch.Tensor, step: int) -> None:
        """Copy the batch and the step's uniform draws into the static buffers."""
        seed = _seed(self.method.cfg.train.seed, step, 11)  # batch_masks' generator seed
        gen = torch.Generator(device=self.device).manual_seed(seed)
        fresh = [torch.rand(s, generator=gen, device=self.device) for s in self.draw_shapes]
        if self.images is None:
            self.images = torch.empty_like(images)
            self.draws = [torch.empty_like(d) for d in fresh]
        if images.shape != self.images.shape:
            raise RuntimeError(
                f"the graphed step needs batches of one shape: {tuple(self.images.shape)}, "
                f"then {tuple(images.shape)}"
            )
        self.images.copy_(images)
        for buf, d in zip(self.draws, fresh, strict=True):
            buf.copy_(d)

    def __call__(self, images: torch.Tensor, labels: Any, step: int) -> dict[str, torch.Tensor]:
        self._fill_inputs(images, step)
        if not self.capture:
            hole, metrics = self._body()
        elif self.calls < self.warmup:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                hole, metrics = self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                # thread_local: the DataLoader's pin-memory thread may call CUDA meanwhile
                with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                    self.out = self._body()
            self.graph.replay()  # the capture recorded the step without running it
            assert self.out is not None
            hole, metrics = self.out
        self.calls += 1
        self.method.hole = hole  # for the sample grid, read before the next step
        # the graph's outputs are overwritten by the next replay: the caller keeps copies
        return {k: v.clone() for k, v in metrics.items()}
