"""A tiny convolutional encoder for tests and the built-in 32-64 px data (seconds on a CPU).

Three 3x3 stride-2 convolutions with BatchNorm and ReLU; stage names conv1..conv3.
"""

from __future__ import annotations

from torch import nn

from cebench.pretrain.models._registry import register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo


class TinyEncoder(Encoder):
    def __init__(
        self, input_size: int = 64, width: int = 16, depth: int = 3, in_chans: int = 3
    ) -> None:
        super().__init__(input_size)
        c_in = in_chans
        for i in range(depth):
            c_out = width * 2**i
            self.stages[f"conv{i + 1}"] = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )
            self.feature_info.append(FeatureInfo(f"conv{i + 1}", c_out, 2 ** (i + 1)))
            c_in = c_out


@register_encoder("tiny")
def tiny(**kwargs) -> TinyEncoder:
    return TinyEncoder(**kwargs)
