"""The plain reference training step that `cebench speed` compares the suite's own step against.

    from cebench.benchmarks.plain_reference import PlainStep
    plain = PlainStep.from_config(cfg, device)      # cfg: a resolved PretrainConfig
    metrics = plain.step(images)                    # {"loss_d", "loss_adv_g", "loss_rec", "loss"}

This is the context-encoder step written the way common public ports of pathak22/context-encoder
(e.g. the PyTorch ports' train.py) write it: eager float32, default (contiguous) layouts, the masks
made per sample on the CPU in a Python loop and then copied to the device, the holes filled channel
by channel, `torch.optim.Adam` with its default implementation, a sigmoid + `BCELoss`
discriminator loss, and the generator's adversarial backward running through the discriminator's
weights too (the ports only zero those gradients at the next step). Same architecture (the suite's
networks with stock `nn.Conv2d` / `nn.ConvTranspose2d` / `nn.LocalResponseNorm` layers, see
`plain_layers`), same losses,
same optimizer hyper-parameters, same order of updates (D on the detached prediction, then G on
lambda_rec * L_rec + lambda_adv * L_adv through the updated D): given the same weights, images and
holes it computes the same losses as `cebench.pretrain.methods.context_encoder.context_encoder_step` in float32
(tests/test_speed.py checks this to 1e-5), so the speed ratio compares like with like.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cebench.pretrain.config import PretrainConfig
from cebench.pretrain.masks import resolve_region_weighting
from cebench.pretrain.methods import get_method
from cebench.pretrain.models.alexnet import ChannelLRN
from cebench.pretrain.models.context_encoder import build_context_encoder, build_discriminator
from cebench.pretrain.models.decoder import FullMapConv2d, PointUpconv


def plain_layers(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with the stock torch layer in place of the suite's fast forms of the
    full-map convolution, the 1x1 up-convolution (GEMMs) and LRN (same parameters, same results)."""
    m = copy.deepcopy(module)
    for sub in m.modules():
        if isinstance(sub, FullMapConv2d):
            sub.__class__ = nn.Conv2d
        elif isinstance(sub, PointUpconv):
            sub.__class__ = nn.ConvTranspose2d
        elif isinstance(sub, ChannelLRN):
            sub.__class__ = nn.LocalResponseNorm
    return m


class PlainStep:
    """One plain training step of a context encoder (see the module docstring)."""

    def __init__(
        self,
        cfg: PretrainConfig,
        net: nn.Module,
        disc: nn.Module | None,
        device: torch.device,
        fill: list[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.net = plain_layers(net).to(self.device).train()
        self.disc = plain_layers(disc).to(self.device).train() if disc is not None else None
        lr = cfg.optim.lr if cfg.optim.lr is not None else cfg.resolved_lr()
        betas = (cfg.optim.beta1, cfg.optim.beta2)
        wd = cfg.optim.weight_decay
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=betas, weight_decay=wd)
        self.opt_d = (
            torch.optim.Adam(
                self.disc.parameters(), lr=cfg.optim.lr_d, betas=betas, weight_decay=wd
            )
            if self.disc is not None
            else None
        )
        rgb = fill if fill is not None else (cfg.data.fill_value or [0.5, 0.5, 0.5])
        self.fill = [2 * v - 1 for v in rgb]  # [0, 1] -> the images' [-1, 1]
        self.rng = random.Random(seed)
        self.reconstruct_all = get_method(cfg.method).reconstruct_all
        self.lambda_rec = 1.0 if self.reconstruct_all else cfg.loss.lambda_rec
        self.lambda_adv = cfg.loss.lambda_adv
        self.bce = nn.BCELoss()

    @classmethod
    def from_config(cls, cfg: PretrainConfig, device: torch.device | str) -> PlainStep:
        """Fresh networks from the config's model section, seeded with train.seed."""
        torch.manual_seed(cfg.train.seed)
        net = build_context_encoder(cfg.model)
        disc = None
        if get_method(cfg.method).adversarial(cfg):
            disc = build_discriminator(cfg.model)
        return cls(cfg, net, disc, torch.device(device), seed=cfg.train.seed)

    # ----- masks: one sample at a time on the CPU, as the ports do
    def _one_mask(self, size: int) -> torch.Tensor:
        m, kind = self.cfg.mask, self.cfg.mask.kind
        mask = torch.zeros(size, size, dtype=torch.bool)
        if kind == "center":
            region = m.region or size // 2
            top = (size - region) // 2 + m.overlap
            side = region - 2 * m.overlap
            mask[top : top + side, top : top + side] = True
        elif kind == "random-block":
            lo = max(1, size // 8)
            hi = max(lo, int(size * math.sqrt(m.coverage / 2)))
            for _ in range(self.rng.randint(1, 8)):
                h, w = self.rng.randint(lo, hi), self.rng.randint(lo, hi)
                y, x = self.rng.randint(0, size - h), self.rng.randint(0, size - w)
                trial = mask.clone()
                trial[y : y + h, x : x + w] = True
                if trial.float().mean() > m.coverage:
                    break
                mask = trial
        elif kind == "random-region":
            # released train_random.lua: noise at 6% resolution, bicubic upscaling, a random crop,
            # thresholded so that `coverage` of the pixels are dropped
            cells = math.ceil(size * 0.06) + 4
            big = round(cells / 0.06)
            noise = torch.rand(1, 1, cells, cells)
            pattern = F.interpolate(noise, size=(big, big), mode="bicubic", align_corners=False)[
                0, 0
            ]
            margin = round(2 / 0.06)
            y = self.rng.randint(margin, big - size - margin)
            x = self.rng.randint(margin, big - size - margin)
            crop = pattern[y : y + size, x : x + size]
            k = int(math.floor(m.coverage * size * size))
            if k > 0:
                mask = crop <= crop.flatten().kthvalue(k).values
        return mask

    def make_masks(self, batch: int, size: int) -> torch.Tensor:
        masks = torch.zeros(batch, 1, size, size, dtype=torch.bool)
        for i in range(batch):
            masks[i, 0] = self._one_mask(size)
        return masks

    def _weights(self, hole: torch.Tensor) -> torch.Tensor:
        """loss.region_weighting as the suite resolves it: 1 on the hole and border_weight on the
        overlap band around it ("overlap"), the hole only ("hole"), or every pixel ("whole")."""
        w = hole.float()
        how = resolve_region_weighting(self.cfg.loss.region_weighting, self.cfg.mask.kind)
        if how == "whole":
            return torch.ones_like(w)
        o = self.cfg.mask.overlap
        if o > 0 and how == "overlap":
            band = F.max_pool2d(w, 2 * o + 1, stride=1, padding=o) - w
            w = w + band * self.cfg.mask.border_weight
        return w

    # ----- the step
    def step(self, images: torch.Tensor, hole: torch.Tensor | None = None) -> dict[str, float]:
        real = images.to(self.device)
        b, _, size, _ = real.shape
        if hole is None:
            hole = self.make_masks(b, size)
        hole = hole.to(self.device)
        masked = real.clone()
        for c in range(3):
            masked[:, c][hole[:, 0]] = self.fill[c]
        fake = self.net(masked)
        out = fake.shape[-1]
        if self.reconstruct_all:
            weights = torch.ones_like(hole, dtype=torch.float32)
        else:
            weights = self._weights(hole)
        off = (size - out) // 2
        real_part = real[:, :, off : off + out, off : off + out]
        weights = weights[:, :, off : off + out, off : off + out]

        metrics: dict[str, Any] = {}
        if self.disc is not None and self.opt_d is not None:
            self.disc.zero_grad()
            out_real = torch.sigmoid(self.disc(real_part))
            out_fake = torch.sigmoid(self.disc(fake.detach()))
            err_d = 0.5 * (
                self.bce(out_real, torch.ones_like(out_real))
                + self.bce(out_fake, torch.zeros_like(out_fake))
            )
            err_d.backward()
            self.opt_d.step()
            metrics["loss_d"] = err_d.item()

        self.net.zero_grad()
        err_rec = (weights * (fake - real_part) ** 2).sum() / (3 * (weights > 0).sum()).clamp(min=1)
        if self.disc is not None:
            out_g = torch.sigmoid(self.disc(fake))
            err_adv = self.bce(out_g, torch.ones_like(out_g))
            err_g = self.lambda_rec * err_rec + self.lambda_adv * err_adv
            metrics["loss_adv_g"] = err_adv.item()
        else:
            err_g = self.lambda_rec * err_rec
        err_g.backward()
        self.opt.step()
        metrics["loss_rec"] = err_rec.item()
        metrics["loss"] = err_g.item()
        return metrics
