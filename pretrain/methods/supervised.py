"""The supervised baseline: the same encoder trained with class labels (paper Table 2's first row).

    cebench pretrain --method supervised --data data/builtin/imagefolder/train --out runs/sup

The network is the registry encoder of the model config, global average pooling of its last stage
and one linear layer; cross-entropy on an ImageFolder tree (one sub-folder per class). Only the
encoder goes into encoder.pt, so it drops into every transfer harness as an upper reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.distributed import average_gradients
from cebench.pretrain.methods.base import PretrainMethod, autocast, register_method
from cebench.pretrain.models import Encoder, build_encoder


class SupervisedNet(nn.Module):
    """encoder -> global average pool of the last stage -> linear head."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return self.head(feats.mean(dim=(2, 3)))


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


@register_method("supervised")
class Supervised(PretrainMethod):
    uses_labels = True
    uses_fill = False
    small_config = "small-supervised"

    @classmethod
    def check(cls, cfg: Any) -> None:
        pass  # the mask is not used

    def build(self) -> None:
        cfg = self.cfg
        self.enc_name = cfg.model.encoder
        self.enc_kwargs = {**cfg.model.encoder_kwargs, "input_size": cfg.model.input_size}
        net = SupervisedNet(build_encoder(self.enc_name, **self.enc_kwargs), self.num_outputs())
        self.models["net"] = self.prepare(net)
        self.optims["net"] = self.adam(self.models["net"], cfg.optim.lr)

    def num_outputs(self) -> int:
        """Outputs of the linear head: the classes (a subclass with other targets changes it)."""
        return len(self.classes)

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        assert labels is not None
        return supervised_step(
            self.models["net"],
            self.optims["net"],
            images,
            labels.to(self.device, non_blocking=True),
            world_size=self.dist.world_size,
            bf16=self.bf16,
        )

    def meta(self) -> dict[str, Any]:
        return {"mask": None, "classes": self.classes}

    def encoder(self) -> tuple[nn.Module, str, dict[str, Any]]:
        return self.models["net"].encoder, self.enc_name, self.enc_kwargs
