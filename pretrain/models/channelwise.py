"""The channel-wise fully-connected layer of the context encoder (Pathak et al. 2016, Sec. 3.1).

    layer = ChannelwiseFC(channels=256, size=6)     # AlexNet pool5: 256 maps of 6x6
    y = layer(x)                                     # [B, 256, 6, 6] -> [B, 256, 6, 6]

Each of the m input maps (n x n) has its own fully-connected layer to an n x n output map, and no
weights connect different maps: m * n^4 weights (+ m * n^2 biases) instead of the m^2 * n^4 of a
full FC layer. All m layers run as one batched matrix product (einsum), not a Python loop.
`ChannelwiseBottleneck` adds the paper's stride-1 convolution that mixes information across maps.
`dropout` (the paper's feature-learning net: 0.5, Sec. 5.2) drops outputs of the channel-wise FC
layer only, in training mode; it is the one dropout of the context encoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ChannelwiseFC(nn.Module):
    """m independent n^2 -> n^2 linear maps; weight [m, out=n^2, in=n^2] like m `nn.Linear`s."""

    def __init__(self, channels: int, size: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ChannelwiseFC: dropout must be in [0, 1), got {dropout}")
        self.channels, self.size, self.dropout = channels, size, dropout
        n2 = size * size
        self.weight = nn.Parameter(torch.empty(channels, n2, n2))
        self.bias = nn.Parameter(torch.empty(channels, n2)) if bias else None
        # nn.Linear's default initialisation, per channel: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1 / math.sqrt(n2)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, h, w = x.shape
        if (m, h, w) != (self.channels, self.size, self.size):
            raise ValueError(
                f"ChannelwiseFC expects [B,{self.channels},{self.size},{self.size}], got {tuple(x.shape)}"
            )
        y = torch.einsum("bmi,moi->bmo", x.reshape(b, m, h * w), self.weight)
        if self.bias is not None:
            y = y + self.bias
        if self.dropout > 0:  # inside the layer: the state dict keys stay those of dropout 0
            y = F.dropout(y, self.dropout, self.training)
        return y.view(b, m, h, w)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, size={self.size}, bias={self.bias is not None}, "
            f"dropout={self.dropout}"
        )


class ChannelwiseBottleneck(nn.Sequential):
    """Channel-wise FC, then the paper's stride-1 convolution across channels, BatchNorm, ReLU.

    The convolution is 1x1: the channel-wise FC has already connected every spatial position
    within a map, so what is missing is mixing between maps, which a 1x1 stride-1 convolution
    does at every position (m^2 weights); a larger kernel would only add spatial mixing that the
    FC layer already provides.
    """

    def __init__(self, channels: int, size: int, dropout: float = 0.0) -> None:
        super().__init__(
            ChannelwiseFC(channels, size, dropout=dropout),
            nn.Conv2d(channels, channels, kernel_size=1, stride=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
