"""Rotation prediction (Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by
Predicting Image Rotations", ICLR 2018): classify which of 4 rotations was applied to an image.

    cebench pretrain --data DIR --config small-rotation --out runs/rot
    cebench pretrain --data DIR --method rotation --mask none --out runs/rot

The paper's settings kept here: the 4 rotations are 0, 90, 180 and 270 degrees (multiples of 90
degrees are flips and transposes: no interpolation artefact gives the answer away), and all four
rotated copies of every image go into the same batch (the paper found this better than one random
rotation per image), so a batch of B images is a 4B-image classification batch. The network is
the config's registry encoder, global average pooling of its last stage and one linear layer to
the 4 classes (the supervised baseline's network, `cebench.pretrain.methods.supervised.SupervisedNet`);
only the encoder goes into encoder.pt. The paper trains with SGD and momentum; here Adam with
the config's optim section, as every other arm of a suite. Labels: class k
is k quarter-turns counter-clockwise, `torch.rot90(x, k, dims=(-2, -1))`. There is no randomness in
a step beyond the data order. The mask settings are not used.
"""

from __future__ import annotations

from typing import Any

import torch

from cebench.pretrain.methods.base import register_method
from cebench.pretrain.methods.supervised import Supervised, supervised_step

ROTATIONS = 4  # 0, 90, 180, 270 degrees


def four_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,C,S,S] -> ([4B,C,S,S], labels [4B]): row 4i+k is image i turned k times 90 degrees
    counter-clockwise, with label k."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    turned = torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(ROTATIONS)], 1)
    labels = torch.arange(ROTATIONS, device=images.device).repeat(images.shape[0])
    return turned.flatten(0, 1), labels


@register_method("rotation")
class Rotation(Supervised):
    """The supervised network and step with the 4 rotations as the labels."""

    uses_labels = False
    small_config = "small"

    def num_outputs(self) -> int:
        return ROTATIONS

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        turned, rot = four_rotations(images)
        return supervised_step(
            self.models["net"],
            self.optims["net"],
            turned.contiguous(memory_format=self.fmt),
            rot,
            world_size=self.dist.world_size,
            bf16=self.bf16,
        )

    def sample_rows(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """The four rotations of 8 images, one row per rotation (what the network classifies)."""
        x = images[:8]
        return [torch.rot90(x, k, dims=(-2, -1)) for k in range(ROTATIONS)]

    def meta(self) -> dict[str, Any]:
        return {"mask": None}
