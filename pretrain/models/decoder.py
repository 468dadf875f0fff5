"""Decoder, "conv" bottleneck and local discriminator of the context encoder.

    dec = UpconvDecoder(in_channels=4000, in_size=1, widths=[512, 256, 128, 64], output_size=64)
    d = Discriminator(input_size=64, width=64)          # logits [B]

Released inpainting net (pathak22/context-encoder, train.lua): a 4x4 convolution to 1x1x4000
(BatchNorm, LeakyReLU 0.2), then 4x4 up-convolutions - the first stride 1 (1 -> 4 px, as DCGAN),
then stride 2 - with BatchNorm and ReLU between them and tanh at the end; the discriminator is a
stack of 4x4 stride-2 convolutions (64 filters first, doubling, BatchNorm except on the first,
LeakyReLU 0.2) ending in a single logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.models.dcgan import dcgan_widths


class FullMapConv2d(nn.Conv2d):
    """An nn.Conv2d whose kernel covers its whole (unpadded) input map: [B,C,k,k] -> [B,D,1,1].

    Same parameters, state_dict and result as nn.Conv2d, computed as one matrix product: on CPU
    oneDNN runs this shape (4x4x512 -> 4000, the released bottleneck) about 3x slower than the
    equivalent GEMM, forward and backward (measured: benchmarks/README.md). Any other input
    shape falls back to the ordinary convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() != 4
            or tuple(x.shape[-2:]) != self.kernel_size
            or self.padding != (0, 0)
            or self.groups != 1
        ):
            return super().forward(x)
        y = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)
        return y.view(x.shape[0], self.out_channels, 1, 1)


class PointUpconv(nn.ConvTranspose2d):
    """An nn.ConvTranspose2d from a 1x1 code (stride 1, no padding): [B,C,1,1] -> [B,D,k,k] as one
    matrix product (same parameters and result; see FullMapConv2d for why)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (
            x.dim() != 4
            or tuple(x.shape[-2:]) != (1, 1)
            or output_size is not None
            or self.stride != (1, 1)
            or self.padding != (0, 0)
            or self.output_padding != (0, 0)
            or self.groups != 1
        ):
            return super().forward(x, output_size)
        y = (x.flatten(1) @ self.weight.flatten(1)).view(
            x.shape[0], self.out_channels, *self.kernel_size
        )
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1).to(y.dtype)


class ConvBottleneck(nn.Sequential):
    """A convolution with a kernel the size of the encoder's map: [B,C,s,s] -> [B,dim,1,1]."""

    def __init__(self, in_channels: int, in_size: int, dim: int) -> None:
        super().__init__(
            FullMapConv2d(in_channels, dim, kernel_size=in_size, bias=False),
            nn.BatchNorm2d(dim),
            nn.LeakyReLU(0.2, inplace=True),
        )


class UpconvDecoder(nn.Module):
    """len(widths) + 1 up-convolutions (BatchNorm + ReLU after all but the last), then tanh.

    Each up-convolution is 4x4 stride 2 (the side doubles) while that does not overshoot
    `output_size`; from a 1x1 code the first is 4x4 stride 1 (1 -> 4 px); once doubling would
    overshoot, the remaining ones are 3x3 stride 1 (same size). If the side then still differs from
    `output_size` (AlexNet: 6 * 2^5 = 192 for 227), the last up-convolution's output is resized
    bilinearly to `output_size` before tanh: one exact resize at the end keeps every learned layer
    a plain doubling instead of ad-hoc kernel/padding choices per output size.
    """

    def __init__(
        self,
        in_channels: int,
        in_size: int,
        widths: list[int],
        output_size: int,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_size < 1 or output_size < in_size:
            raise ConfigError(f"decoder: cannot go from {in_size} px to a {output_size} px output")
        layers: list[nn.Module] = []
        c, s = in_channels, in_size
        chans = list(widths) + [out_channels]
        for i, w in enumerate(chans):
            last = i == len(chans) - 1
            if s == 1 and output_size >= 4:
                layers.append(PointUpconv(c, w, 4, stride=1, padding=0, bias=last))
                s = 4
            elif 2 * s <= output_size:
                layers.append(nn.ConvTranspose2d(c, w, 4, stride=2, padding=1, bias=last))
                s *= 2
            else:
                layers.append(nn.ConvTranspose2d(c, w, 3, stride=1, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.layers = nn.Sequential(*layers)
        self.upconv_size = s  # side after the up-convolutions, before any final resize
        self.output_size = output_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.layers(z)
        if y.shape[-1] != self.output_size:
            y = F.interpolate(
                y, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False
            )
        return torch.tanh(y)


class Discriminator(nn.Module):
    """Local adversarial discriminator: [B,3,S,S] -> logits [B].

    4x4 stride-2 convolutions until the map is at most 7 px (4x4 for 64 px, as released), widths as
    the DCGAN encoder (64 first, doubling to 512), then a convolution over the whole remaining map
    to one logit. No sigmoid: the BCE-with-logits losses in `cebench.pretrain.losses` apply it.
    """

    def __init__(self, input_size: int = 64, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if input_size < 4:
            raise ConfigError(f"discriminator input must be >= 4 px, got {input_size}")
        depth, s = 0, input_size
        while s >= 8:
            s //= 2
            depth += 1
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(dcgan_widths(depth, width)):
            layers.append(nn.Conv2d(c, w, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c = w
        layers.append(FullMapConv2d(c, 1, kernel_size=s))
        self.layers = nn.Sequential(*layers)
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1).squeeze(1)
