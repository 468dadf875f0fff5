"""Masked-patch reconstruction (He, Chen, Xie, Li, Dollar, Girshick, "Masked Autoencoders Are
Scalable Vision Learners", CVPR 2022), as a context encoder with many small square holes.

    cebench pretrain --data DIR --config small-masked-patches --out runs/mae
    cebench pretrain --data DIR --method masked-patches --mask none \
        method_kwargs='{patch: 8, ratio: 0.75}' --out runs/mae

The image is cut into a grid of `patch` x `patch` px squares and a fixed fraction `ratio` of them
is dropped in every image (MAE: 75% of the 16 px patches of a 224 px image, chosen uniformly at
random without replacement, a fresh choice per image and step); the loss is the L2 loss on the
dropped pixels only (MAE's loss on the masked patches; no adversarial loss, loss.lambda_* are not
used). The network is the context encoder's (`cebench.pretrain.models.build_context_encoder`,
model.predict=image) and so is the step (`cebench.pretrain.steps.context_encoder_step` with
overlap 0, i.e. weight 1 on the holes and 0 elsewhere): a convolutional encoder sees the whole
image with the dropped patches set to the fill value (data.fill), as the context encoder's holes.
Not done here: MAE's ViT encoder that sees only the visible patches (and its light decoder over
mask tokens), and its per-patch normalised targets (norm_pix_loss). MAE trains with AdamW (lr
1.5e-4 x batch / 256, weight decay 0.05, betas 0.9 / 0.95, cosine schedule); here Adam with the
config's optim section, as every other arm of a suite. The mask settings (mask.*) are not used:
the patch grid is this method's own (`patch_grid_masks`), drawn from a generator seeded with
(train.seed, step) for the global batch and sliced by process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cebench.core.errors import ConfigError
from cebench.pretrain.methods.base import register_method
from cebench.pretrain.methods.context_encoder import ContextEncoder
from cebench.pretrain.steps import context_encoder_step
from cebench.pretrain.train_data import _seed


@dataclass
class MaskedPatchesOptions:
    patch: int = 8  # side of a square patch in px; must divide model.input_size (MAE: 16 of 224)
    ratio: float = 0.75  # fraction of the patches dropped in every image (MAE: 0.75)

    def validate(self) -> None:
        if self.patch < 1:
            raise ConfigError(f"method_kwargs.patch must be >= 1, got {self.patch}")
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"method_kwargs.ratio must be in (0, 1), got {self.ratio}")


def patch_grid_masks(
    batch: int,
    size: int,
    patch: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """bool[B,1,S,S]: round(ratio * n) of the n = (size / patch)^2 grid-aligned squares dropped in
    every image, chosen by sorting uniform noise (MAE's `random_masking`)."""
    if size % patch:
        raise ConfigError(f"method_kwargs.patch={patch} must divide model.input_size={size}")
    side = size // patch
    n = side * side
    drop = round(ratio * n)
    if not 0 < drop < n:
        raise ConfigError(
            f"method_kwargs.ratio={ratio} drops {drop} of {n} patches; need at least one dropped "
            "and one kept (a smaller method_kwargs.patch gives more patches)"
        )
    gen_dev = generator.device if generator is not None else torch.device(device)
    noise = torch.rand(batch, n, generator=generator, device=gen_dev).to(device)
    rank = noise.argsort(1).argsort(1)  # each patch's place in its image's random order
    grid = (rank < drop).view(batch, 1, side, side)
    return grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


@register_method("masked-patches")
class MaskedPatches(ContextEncoder):
    needs_mask = None  # its own patch grid: mask.kind is not used
    options_class = MaskedPatchesOptions

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.model.predict != "image":
            raise ConfigError(
                "method=masked-patches predicts the whole image: it needs model.predict=image "
                "and model.output_size=model.input_size"
            )
        o = cls.options(cfg)
        patch_grid_masks(1, cfg.model.input_size, o.patch, o.ratio)  # the grid fits

    @classmethod
    def default_lr(cls, cfg: Any) -> float:
        return cfg.optim.lr_d  # L2 only: the released code's lr rule gives lr_d

    def adversarial(self) -> bool:
        return False

    def build(self) -> None:
        super().build()
        self.parts.lambda_rec, self.parts.overlap = 1.0, 0  # L2 on the dropped pixels only

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        cfg, o, dev = self.cfg, self.opts, images.device
        gen = torch.Generator(device=dev).manual_seed(_seed(cfg.train.seed, step, 29))
        hole = patch_grid_masks(
            cfg.train.batch_size, cfg.model.input_size, o.patch, o.ratio, gen, dev
        )
        local = images.shape[0]
        self.hole = hole[self.dist.rank * local : (self.dist.rank + 1) * local]
        return context_encoder_step(
            self.parts,
            images,
            self.hole,
            self.fill,
            world_size=self.dist.world_size,
            bf16=self.bf16,
        )

    def meta(self) -> dict[str, Any]:
        return {"mask": "patches", "patch": self.opts.patch, "ratio": self.opts.ratio}
