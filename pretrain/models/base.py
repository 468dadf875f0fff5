"""The feature API every encoder exposes (timm's `forward_features` / `feature_info` idea).

An `Encoder` is an `nn.Module` with:
- `feature_info`: list of `FeatureInfo(name, channels, reduction)` for each named stage, in order,
  for example conv1 .. conv5, pool5 for AlexNet; `reduction` is the stride relative to the input;
- `forward_features(x) -> dict[str, Tensor]`: every stage's output, keyed by name, in order;
- `forward(x) -> Tensor`: the last stage's output (the map the context encoder's bottleneck sees);
- `num_features`: channels of the last stage;
- `input_size`: the input side in pixels the encoder was configured for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    channels: int
    reduction: int


class Encoder(nn.Module):
    """Base class: subclasses fill `self.stages` (an ordered nn.ModuleDict) and `feature_info`."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.stages = nn.ModuleDict()
        self.feature_info: list[FeatureInfo] = []
        # trained fully connected layers on the flattened last stage that came with the weights
        # (torchvision AlexNet's fc6, fc7): [(weight [out, in], bias [out]), ...], not part of the
        # forward pass nor of the state dict; the transfer heads that keep them copy them
        self.trained_fc: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def num_features(self) -> int:
        return self.feature_info[-1].channels

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.feature_info]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x

    @torch.no_grad()
    def output_shape(self, input_size: int | None = None) -> tuple[int, int, int]:
        """(channels, height, width) of the last stage for a square input (default `input_size`)."""
        s = input_size or self.input_size
        was_training = self.training
        self.eval()
        y = self.forward(torch.zeros(1, 3, s, s, device=next(self.parameters()).device))
        self.train(was_training)
        return tuple(y.shape[1:])  # type: ignore[return-value]
