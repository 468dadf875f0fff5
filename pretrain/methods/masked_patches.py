"""Masked-patch reconstruction (He, Chen, Xie, Li, Dollar, Girshick, "Masked Autoencoders Are
Scalable Vision Learners", CVPR 2022), as a context encoder with many small square holes.

    cebench pretrain --data DIR --config small-masked-patches --out runs/mae
    cebench pretrain --data DIR --method masked-patches --mask none \
        method_kwargs='{patch: 8, ratio: 0.75}' --out runs/mae
    cebench pretrain --data DIR --config small-masked-patches model.encoder=timm \
        'model.encoder_kwargs={model_name: vit_tiny_patch16_224, model_kwargs: {patch_size: 8}}' \
        'method_kwargs={patch: 8, decoder_depth: 2, decoder_width: 128, decoder_heads: 4}' --out runs/mae-vit

The image is cut into a grid of `patch` x `patch` px squares and a fixed fraction `ratio` of them
is dropped in every image (MAE: 75% of the 16 px patches of a 224 px image, chosen uniformly at
random without replacement, a fresh choice per image and step); the loss is the L2 loss on the
dropped pixels only (MAE's loss on the masked patches; no adversarial loss, loss.lambda_* are not
used). Two networks, chosen by the encoder:
- a timm vision transformer (model.encoder=timm with a `vit_*` model_name): MAE's own path
  (`cebench.pretrain.models.mae.MaskedAutoencoder`). The patches are the ViT's tokens
  (method_kwargs.patch must equal its patch size); the encoder runs on the visible tokens only
  (+ the class token, position embeddings added before dropping), a light transformer decoder
  puts a mask token at every dropped position, and the loss is the per-pixel MSE on the dropped
  patches (method_kwargs.norm_pix: per-patch normalised targets, MAE's norm_pix_loss). The
  decoder: method_kwargs.decoder_depth / decoder_width / decoder_heads (MAE: 8 blocks of width
  512, 16 heads; a much smaller one fits the tiny test and CPU runs). encoder.pt holds the whole
  ViT, which transfer runs on all patches;
- any other (convolutional) encoder: the context encoder's network
  (`cebench.pretrain.models.build_context_encoder`, model.predict=image) and step
  (`cebench.pretrain.methods.context_encoder.context_encoder_step` with overlap 0, i.e. weight 1 on the holes and 0
  elsewhere): the encoder sees the whole image with the dropped patches set to the fill value
  (data.fill), as the context encoder's holes. The decoder_* and norm_pix settings are refused.
MAE trains with AdamW (lr
1.5e-4 x batch / 256, weight decay 0.05, betas 0.9 / 0.95, cosine schedule); here Adam with the
config's optim section, as every other arm of a suite. The mask settings (mask.*) are not used:
the patch grid is this method's own (`patch_grid_masks`), drawn from a generator seeded with
(train.seed, step) for the global batch and sliced by process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cebench.core.distributed import average_gradients
from cebench.core.errors import ConfigError
from cebench.pretrain.methods.base import autocast, register_method
from cebench.pretrain.methods.context_encoder import ContextEncoder, context_encoder_step
from cebench.pretrain.models import build_encoder
from cebench.pretrain.models.mae import (
    MaskedAutoencoder,
    masked_patch_loss,
    patchify,
    split_patches,
    unpatchify,
    vit_patch_size,
)
from cebench.pretrain.models.timm_encoder import vision_transformer
from cebench.pretrain.samples import composite
from cebench.pretrain.train_data import _seed


@dataclass
class MaskedPatchesOptions:
    patch: int = 8  # side of a square patch in px; must divide model.input_size (MAE: 16 of 224)
    ratio: float = 0.75  # fraction of the patches dropped in every image (MAE: 0.75)
    # ViT encoders only (MAE's decoder and target; refused with a convolutional encoder)
    decoder_depth: int = 8  # transformer blocks (MAE: 8)
    decoder_width: int = 512  # token width (MAE: 512; a multiple of 4 and of decoder_heads)
    decoder_heads: int = 16  # attention heads (MAE: 16)
    norm_pix: bool = False  # per-patch normalised pixel targets (MAE's norm_pix_loss)

    def validate(self) -> None:
        if self.patch < 1:
            raise ConfigError(f"method_kwargs.patch must be >= 1, got {self.patch}")
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"method_kwargs.ratio must be in (0, 1), got {self.ratio}")
        if min(self.decoder_depth, self.decoder_width, self.decoder_heads) < 1:
            raise ConfigError(
                "method_kwargs.decoder_depth, decoder_width, decoder_heads must be >= 1"
            )

    def vit_only(self) -> list[str]:
        """The ViT-only settings that differ from their defaults."""
        default = MaskedPatchesOptions()
        names = ("decoder_depth", "decoder_width", "decoder_heads", "norm_pix")
        return [n for n in names if getattr(self, n) != getattr(default, n)]


def vit_encoder(model_cfg: Any) -> torch.nn.Module | None:
    """The config's encoder built on the meta device (no memory, no weights) when it is a timm
    vision transformer, else None."""
    if model_cfg.encoder != "timm":
        return None
    with torch.device("meta"):
        enc = build_encoder(
            model_cfg.encoder, **model_cfg.encoder_kwargs, input_size=model_cfg.input_size
        )
    return enc if vision_transformer(enc) is not None else None


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
    inpaints = False  # it fills a grid of patches: not in the suites' inpainting figures
    centre_config = None  # the feature-learning AlexNet
    options_class = MaskedPatchesOptions
    graphable = False  # its own patch grid, drawn otherwise than the context encoder's masks

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.model.predict != "image":
            raise ConfigError(
                "method=masked-patches predicts the whole image: it needs model.predict=image "
                "and model.output_size=model.input_size"
            )
        o = cls.options(cfg)
        patch_grid_masks(1, cfg.model.input_size, o.patch, o.ratio)  # the grid fits
        enc = vit_encoder(cfg.model)
        if enc is None and o.vit_only():
            raise ConfigError(
                f"method_kwargs.{', '.join(o.vit_only())}: MAE's decoder settings apply to a timm "
                f"ViT encoder only, not model.encoder={cfg.model.encoder}"
            )
        if enc is not None and vit_patch_size(vision_transformer(enc)) != o.patch:
            raise ConfigError(
                f"method_kwargs.patch={o.patch} must equal the ViT's patch size "
                f"({vit_patch_size(vision_transformer(enc))}): its tokens are the patches"
            )

    @classmethod
    def default_lr(cls, cfg: Any) -> float:
        return cfg.optim.lr_d  # L2 only: the released code's lr rule gives lr_d

    @classmethod
    def adversarial(cls, cfg: Any) -> bool:
        return False

    @classmethod
    def inpaint_refusal(cls, cfg: Any) -> str | None:
        if vit_encoder(cfg.model) is None:
            return None  # the convolutional network predicts the whole image
        return (
            "masked-patches run with a ViT encoder (MAE): its decoder predicts patch "
            "tokens, not an image; cebench inpaint takes context-encoder, autoencoder and "
            "convolutional masked-patches runs"
        )

    def build(self) -> None:
        self.mae_vit = vit_encoder(self.cfg.model) is not None
        if not self.mae_vit:
            super().build()
            self.parts.lambda_rec, self.parts.overlap = 1.0, 0  # L2 on the dropped pixels only
            return
        cfg, o = self.cfg, self.opts
        self.enc_name = cfg.model.encoder
        self.enc_kwargs = {**cfg.model.encoder_kwargs, "input_size": cfg.model.input_size}
        enc = build_encoder(self.enc_name, **self.enc_kwargs)
        net = MaskedAutoencoder(enc, o.decoder_width, o.decoder_depth, o.decoder_heads)
        self.models["net"] = self.prepare(net)
        self.optims["net"] = self.adam(self.models["net"], cfg.optim.lr)
        fill = cfg.data.fill_value or [0.5] * 3
        self.fill = torch.tensor(fill, device=self.device) * 2 - 1  # [0,1] -> [-1,1]
        self.hole: torch.Tensor | None = None
        self.shapes = None

    def mask_shapes(self) -> torch.Tensor | None:
        return None  # its own patch grid: mask.shapes is not used

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        cfg, o, dev = self.cfg, self.opts, images.device
        gen = torch.Generator(device=dev).manual_seed(_seed(cfg.train.seed, step, 29))
        if self.mae_vit:
            return self.vit_step(images, gen)
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

    def vit_step(self, images: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """MAE's step: the same patches as `patch_grid_masks` draws from this generator."""
        net, opt, dev = self.models["net"], self.optims["net"], images.device
        n, local = net.num_patches, images.shape[0]
        noise = torch.rand(self.cfg.train.batch_size, n, generator=gen, device=dev)
        noise = noise[self.dist.rank * local : (self.dist.rank + 1) * local]
        keep, restore, dropped = split_patches(noise, round(self.opts.ratio * n))
        opt.zero_grad(set_to_none=True)
        with autocast(dev, self.bf16):
            pred = net(images, keep, restore)
        target = patchify(images, net.patch)
        loss = masked_patch_loss(pred.float(), target, dropped, self.opts.norm_pix)
        loss.backward()
        average_gradients(list(net.parameters()), self.dist.world_size)
        opt.step()
        grid = dropped.view(local, 1, net.side, net.side)
        self.hole = grid.repeat_interleave(net.patch, 2).repeat_interleave(net.patch, 3)
        self.keep, self.restore = keep, restore
        return {"loss": loss.detach()}

    def sample_rows(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        if not self.mae_vit:
            return super().sample_rows(images)
        if self.hole is None:
            return None
        net = self.models["net"]
        net.eval()
        with torch.no_grad():
            x, h = images[:8], self.hole[:8]
            pred = net(x, self.keep[:8], self.restore[:8]).float()
            if self.opts.norm_pix:  # predictions are normalised patches: show them in the
                t = patchify(x, net.patch)  # image's own per-patch mean and spread
                pred = pred * (t.var(-1, keepdim=True) + 1e-6) ** 0.5 + t.mean(-1, keepdim=True)
            pred = unpatchify(pred, net.patch)
        net.train()
        masked = torch.where(h, self.fill.view(1, 3, 1, 1), x)
        return [masked, composite(x, h, pred), x]

    def encoder(self) -> tuple[torch.nn.Module, str, dict[str, Any]]:
        if self.mae_vit:
            return self.models["net"].encoder, self.enc_name, self.enc_kwargs
        return super().encoder()

    def meta(self) -> dict[str, Any]:
        meta = {"mask": "patches", "patch": self.opts.patch, "ratio": self.opts.ratio}
        if self.mae_vit:  # MAE's network: the encoder saw only the visible patches
            meta.update(encoder_sees="visible patches", norm_pix=self.opts.norm_pix)
        return meta
