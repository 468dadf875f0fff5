"""The channel-wise fully-connected layer of the context encoder (Pathak et al. 2016, Sec. 3.1).

    layer = ChannelwiseFC(channels=256, size=6)     # AlexNet pool5: 256 maps of 6x6
    y = layer(x)                                     # [B, 256, 6, 6] -> [B, 256, 6, 6]

Each of the m input maps (n x n) has its own fully-connected layer to an n x n output map, and no
weights connect different maps: m * n^4 weights (+ m * n^2 biases) instead of the m^2 * n^4 of a
full FC layer. All m layers run as one batched matrix product (einsum), not a Python loop.
`ChannelwiseBottleneck` adds the paper's stride-1 convolution that mixes information across maps.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ChannelwiseFC(nn.Module):
    """m independent n^2 -> n^2 linear maps; weight [m, out=n^2, in=n^2] like m `nn.Linear`s."""

    def __init__(self, channels: int, size: int, bias: bool = True) -> None:
        super().__init__()
        self.channels, self.size = channels, size
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
        return y.view(b, m, h, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, bias={self.bias is not None}"


class ChannelwiseBottleneck(nn.Sequential):
    """Channel-wise FC, then the paper's stride-1 convolution across channels, BatchNorm, ReLU.

    The convolution is 1x1: the channel-wise FC has already connected every spatial position
    within a map, so what is missing is mixing between maps, which a 1x1 stride-1 convolution
    does at every position (m^2 weights); a larger kernel would only add spatial mixing that the
    FC layer already provides.
    """

    def __init__(self, channels: int, size: int) -> None:
        super().__init__(
            ChannelwiseFC(channels, size),
            nn.Conv2d(channels, channels, kernel_size=1, stride=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
