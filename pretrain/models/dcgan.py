"""The DCGAN-style encoder of the released inpainting context encoder (pathak22/context-encoder).

    from cebench.pretrain.models import build_encoder
    enc = build_encoder("dcgan", input_size=128)      # stages conv1..conv5, 128 px -> 4x4x512

4x4 stride-2 convolutions, `width` (64) filters first and doubling up to 8x `width`, BatchNorm on
every layer but the first (DCGAN), LeakyReLU 0.2. Layers are added until the map is 4x4: four for
64 px (64-128-256-512), five for 128 px, where the released code repeats the 64-filter layer
(64-64-128-256-512). The released net then has a 4x4 convolution to a 1x1x4000 bottleneck; that
belongs to the context encoder's "conv" bottleneck (`cebench.pretrain.models.context_encoder`).
"""

from __future__ import annotations

from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.models._registry import register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo


def dcgan_depth(size: int, final: int = 4) -> int:
    """Number of 4x4 stride-2 (padding 1) layers, each flooring the side by 2, to reach <= `final`."""
    depth = 0
    while size > final:
        size //= 2
        depth += 1
    return depth


def dcgan_widths(depth: int, width: int = 64) -> list[int]:
    """Channels per layer: the last four are 1, 2, 4, 8 x `width`; extra leading layers keep `width`
    (released 128 px net: 64, 64, 128, 256, 512); fewer than four layers: 1, 2, 4 x `width`."""
    extra = max(0, depth - 4)
    return [width * 2 ** min(3, max(0, i - extra)) for i in range(depth)]


class DCGANEncoder(Encoder):
    def __init__(
        self, input_size: int = 128, width: int = 64, depth: int | None = None, in_chans: int = 3
    ) -> None:
        super().__init__(input_size)
        depth = dcgan_depth(input_size) if depth is None else depth
        if depth < 1 or input_size // 2**depth < 1:
            raise ConfigError(f"dcgan: depth {depth} does not fit a {input_size} px input")
        c_in = in_chans
        for i, c_out in enumerate(dcgan_widths(depth, width)):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=i == 0)]
            if i > 0:  # DCGAN: no BatchNorm on the first layer
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.stages[f"conv{i + 1}"] = nn.Sequential(*layers)
            self.feature_info.append(FeatureInfo(f"conv{i + 1}", c_out, 2 ** (i + 1)))
            c_in = c_out


@register_encoder("dcgan")
def dcgan(**kwargs) -> DCGANEncoder:
    return DCGANEncoder(**kwargs)
