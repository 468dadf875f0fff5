"""The supervised baseline: the same encoder trained with class labels (paper Table 2's first row).

    cebench pretrain --method supervised --data data/builtin/imagefolder/train --out runs/sup

The network is the registry encoder of the model config, global average pooling of its last
stage, and one linear layer (the classifier head). Training uses cross-entropy on an ImageFolder
tree (one sub-folder per class). Only the encoder is saved to `encoder.pt`, in the same format as
the self-supervised methods, so it drops into every transfer harness as an upper reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cebench.pretrain.models import Encoder


class SupervisedNet(nn.Module):
    """encoder -> global average pool of the last stage -> linear head."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        return self.head(feats.mean(dim=(2, 3)))
