"""The context encoder (Pathak et al., CVPR 2016): inpaint the dropped region from its context.

    cebench pretrain --data DIR --method context-encoder --mask random-region --out runs/ce

Networks: encoder -> channel-wise FC (or the released conv bottleneck) -> up-convolutional
decoder (`cebench.pretrain.models.build_context_encoder`), plus the discriminator when
`loss.lambda_adv > 0`. Loss: lambda_rec * masked L2 (`loss.region_weighting`: by default the
paper's, the dropped region with the overlap band weighted `mask.border_weight` for centre and
random-block masks, the dropped pixels only for random regions) + lambda_adv * adversarial; the
released code's lr rule (10x lr_d under the joint loss).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.masks import resolve_region_weighting
from cebench.pretrain.methods.base import PretrainMethod, register_method
from cebench.pretrain.models import build_context_encoder, build_discriminator
from cebench.pretrain.samples import composite
from cebench.pretrain.steps import GANParts, batch_masks, context_encoder_step


@register_method("context-encoder")
class ContextEncoder(PretrainMethod):
    needs_mask = True
    reconstruct_all = False  # the autoencoder subclass sets True: loss on every pixel

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
        disc = build_discriminator(cfg.model) if self.adversarial() else None
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
        self.shapes: torch.Tensor | None = None  # the shape bank, set by the Trainer
        self.hole: torch.Tensor | None = None

    def adversarial(self) -> bool:
        return self.cfg.loss.lambda_adv > 0

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
