"""The autoencoder baseline (paper Table 2): the context encoder's network with nothing dropped,
trained to reconstruct the whole image with the L2 loss alone.

    cebench pretrain --data DIR --method autoencoder --out runs/ae
"""

from __future__ import annotations

from typing import Any

from cebench.pretrain.methods.base import register_method
from cebench.pretrain.methods.context_encoder import ContextEncoder


@register_method("autoencoder")
class Autoencoder(ContextEncoder):
    needs_mask = False
    reconstruct_all = True
    centre_config = None  # no mask: the feature-learning AlexNet

    @classmethod
    def default_lr(cls, cfg: Any) -> float:
        return cfg.optim.lr_d

    @classmethod
    def adversarial(cls, cfg: Any) -> bool:
        return False
