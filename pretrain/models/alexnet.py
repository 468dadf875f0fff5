"""AlexNet conv1..pool5, the context encoder's feature-learning encoder (Pathak et al. 2016, Sec. 4).

    from cebench.pretrain.models import build_encoder
    enc = build_encoder("alexnet", input_size=227)            # pool5: 256 x 6 x 6
    enc = build_encoder("alexnet-poolfree", input_size=227)   # pools -> strided convs, also 6 x 6
    enc = build_encoder("alexnet", layout="torchvision", norm="none", pretrained=True)  # ImageNet

Stages: conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5 (conv = conv + ReLU [+ norm]).
`layout="caffe"` is the paper's (Caffe) AlexNet: 96-256-384-384-256 filters, conv1 11x11/4 with no
padding, LRN after conv1 and conv2. The Caffe original also splits conv2/4/5 into two groups (two
GPUs); `groups=2` reproduces that, the default 1 does not. `layout="torchvision"` is torchvision's
variant (64-192-384-256-256, conv1 padding 2), whose ImageNet weights `pretrained=True` loads from
the local torch hub cache only. `width` scales every layer's filters for small presets; `conv1_*`
shrink the first layer's stride for 64 px inputs, where the 11x11/4 stem would leave no map.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.models._registry import register_encoder
from cebench.pretrain.models.base import Encoder, FeatureInfo
from cebench.pretrain.models.hub import load_hub_weights

LAYOUTS = {
    "caffe": {"widths": (96, 256, 384, 384, 256), "conv1_padding": 0},
    "torchvision": {"widths": (64, 192, 384, 256, 256), "conv1_padding": 2},
}
# torchvision.models.AlexNet_Weights.IMAGENET1K_V1 (written out: no torchvision model import needed)
TORCHVISION_ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class ChannelLRN(nn.LocalResponseNorm):
    """nn.LocalResponseNorm (same formula and arguments) with the sum over the channel window
    written as `size` shifted slices of the padded squares instead of torch's avg_pool3d, whose
    CPU forward and backward take a quarter of the AlexNet context encoder's step: 2-3x faster
    for the same result (benchmarks/README.md). b = a / (k + alpha/n * sum_window a^2)^beta."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        n, c = self.size, x.shape[1]
        sq = F.pad(x * x, (0, 0, 0, 0, n // 2, (n - 1) // 2))  # zero channels at both ends
        window = sq[:, 0:c]
        for j in range(1, n):
            window = window + sq[:, j : j + c]
        return x / (window * (self.alpha / n) + self.k).pow(self.beta)


class AlexNetEncoder(Encoder):
    def __init__(
        self,
        input_size: int = 227,
        layout: Literal["caffe", "torchvision"] = "caffe",
        width: float = 1.0,
        norm: Literal["lrn", "bn", "none"] = "lrn",
        poolfree: bool = False,
        groups: int = 1,
        conv1_kernel: int = 11,
        conv1_stride: int = 4,
        conv1_padding: int | None = None,
        in_chans: int = 3,
        pretrained: bool = False,
    ) -> None:
        super().__init__(input_size)
        if layout not in LAYOUTS:
            raise ConfigError(f"alexnet: layout must be one of {list(LAYOUTS)}, got {layout!r}")
        if norm not in ("lrn", "bn", "none"):
            raise ConfigError(f"alexnet: norm must be 'lrn', 'bn' or 'none', got {norm!r}")
        widths = [
            max(groups, round(c * width / groups) * groups) for c in LAYOUTS[layout]["widths"]
        ]
        pad1 = LAYOUTS[layout]["conv1_padding"] if conv1_padding is None else conv1_padding
        self.norm, self.poolfree = norm, poolfree
        c1, c2, c3, c4, c5 = widths
        reduction = conv1_stride
        self._add_conv(
            "conv1", in_chans, c1, conv1_kernel, conv1_stride, pad1, 1, reduction, lrn=True
        )
        reduction *= 2
        self._add_pool("pool1", c1, reduction)
        self._add_conv("conv2", c1, c2, 5, 1, 2, groups, reduction, lrn=True)
        reduction *= 2
        self._add_pool("pool2", c2, reduction)
        self._add_conv("conv3", c2, c3, 3, 1, 1, 1, reduction)
        self._add_conv("conv4", c3, c4, 3, 1, 1, groups, reduction)
        self._add_conv("conv5", c4, c5, 3, 1, 1, groups, reduction)
        reduction *= 2
        self._add_pool("pool5", c5, reduction)
        s = self._side(input_size, conv1_kernel, conv1_stride, pad1)
        if s < 1:
            raise ConfigError(
                f"alexnet: a {input_size} px input leaves no pool5 map; use a larger input_size "
                "or a smaller conv1_stride"
            )
        if pretrained:
            self._load_torchvision_weights(
                layout, width, norm, poolfree, groups, (conv1_kernel, conv1_stride, pad1)
            )

    @staticmethod
    def _side(size: int, k1: int, s1: int, p1: int) -> int:
        size = (size + 2 * p1 - k1) // s1 + 1
        for _ in range(3):  # pool1, pool2, pool5: 3x3 stride 2, no padding (conv2-5 keep the size)
            size = (size - 3) // 2 + 1
        return size

    def _add_conv(self, name, c_in, c_out, k, stride, pad, groups, reduction, lrn=False) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, pad, groups=groups)]
        if self.norm == "bn":
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
        if (
            self.norm == "lrn" and lrn
        ):  # AlexNet: LRN after conv1 and conv2 (size 5, alpha 1e-4, beta 0.75)
            layers.append(ChannelLRN(5, alpha=1e-4, beta=0.75, k=1.0))
        self.stages[name] = nn.Sequential(*layers)
        self.feature_info.append(FeatureInfo(name, c_out, reduction))

    def _add_pool(self, name, channels, reduction) -> None:
        if self.poolfree:
            # Pool-free variant: a learned convolution with the pool's kernel (3) and stride (2),
            # so every map keeps the size it has with pooling (6x6 pool5 at 227 px).
            layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, 2)]
            if self.norm == "bn":
                layers.append(nn.BatchNorm2d(channels))
            self.stages[name] = nn.Sequential(*layers, nn.ReLU(inplace=True))
        else:
            self.stages[name] = nn.MaxPool2d(3, 2)
        self.feature_info.append(FeatureInfo(name, channels, reduction))

    def _load_torchvision_weights(self, layout, width, norm, poolfree, groups, conv1) -> None:
        if (layout, width, norm, poolfree, groups, conv1) != (
            "torchvision",
            1.0,
            "none",
            False,
            1,
            (11, 4, 2),
        ):
            raise ConfigError(
                "alexnet: pretrained=True needs the torchvision architecture: layout='torchvision', "
                "width=1, norm='none', poolfree=False, groups=1 and the default conv1"
            )
        state = load_hub_weights(url=TORCHVISION_ALEXNET_URL)
        # torchvision features.{0,3,6,8,10} are conv1..conv5; the classifier (fc6, fc7, fc8) is
        # not part of pool5: fc6/fc7 are kept aside for the transfer heads (`take_trained_fc`).
        names = {0: "conv1", 3: "conv2", 6: "conv3", 8: "conv4", 10: "conv5"}
        mapped = {}
        for idx, stage in names.items():
            for p in ("weight", "bias"):
                key = f"features.{idx}.{p}"
                if key not in state:
                    raise CheckpointError(f"torchvision AlexNet weights lack {key}")
                mapped[f"stages.{stage}.0.{p}"] = state[key]
        self.load_state_dict(mapped, strict=True)
        self.take_trained_fc(state)

    def take_trained_fc(self, state: dict[str, torch.Tensor]) -> None:
        """Keep torchvision AlexNet's trained fc6 (classifier.1: 9216 -> 4096, on pool5's
        256 x 6 x 6) and fc7 (classifier.4) as `trained_fc` when `state` has them; fc8 is
        ImageNet's 1000-way classifier, which every transfer protocol redraws."""
        keys = [f"classifier.{i}.{p}" for i in (1, 4) for p in ("weight", "bias")]
        if all(k in state for k in keys):
            w6, b6, w7, b7 = (state[k].detach().float().clone() for k in keys)
            self.trained_fc = [(w6, b6), (w7, b7)]


@register_encoder("alexnet")
def alexnet(**kwargs) -> AlexNetEncoder:
    return AlexNetEncoder(**kwargs)


@register_encoder("alexnet-poolfree")
def alexnet_poolfree(**kwargs) -> AlexNetEncoder:
    if "poolfree" in kwargs:
        raise ConfigError("alexnet-poolfree: do not pass poolfree (it is always True)")
    return AlexNetEncoder(poolfree=True, **kwargs)
