"""Losses against hand-computed values.

.venv/bin/python -m pytest -q tests/test_losses.py
"""

from __future__ import annotations

import math

import pytest
import torch

from cebench.pretrain.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
    reconstruction_loss,
)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_reconstruction_loss_hand_computed():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    target[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])  # hole pixel: squared errors 1 + 4 + 9
    target[0, :, 0, 1] = 0.5  # border pixel (weight 10): 3 * 0.25
    target[0, :, 1, :] = 7.0  # weight 0: ignored
    w = torch.tensor([[[[1.0, 10.0], [0.0, 0.0]]]])
    expected = (1 * 14 + 10 * 0.75) / (3 * 2)  # divided by C * (pixels with w > 0)
    assert reconstruction_loss(pred, target, w).item() == pytest.approx(expected)


def test_reconstruction_loss_all_ones_is_mse_and_zero_weights_give_zero():
    pred, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ones = torch.ones(2, 1, 4, 4)
    assert reconstruction_loss(pred, target, ones).item() == pytest.approx(
        torch.mean((pred - target) ** 2).item(), rel=1e-6
    )
    assert reconstruction_loss(pred, target, torch.zeros(2, 1, 4, 4)).item() == 0.0
    with pytest.raises(ValueError, match="weights"):
        reconstruction_loss(pred, target, torch.ones(2, 3, 4, 4))


def test_discriminator_loss_hand_computed_bce():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
    # -log(sigmoid(x)) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    real_term = (_softplus(-0.0) + _softplus(-2.0)) / 2
    fake_term = (_softplus(-1.0) + _softplus(1.0)) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(0.5 * (real_term + fake_term))


def test_generator_adversarial_loss_hand_computed_bce():
    fake = torch.tensor([-1.0, 3.0])
    expected = (_softplus(1.0) + _softplus(-3.0)) / 2  # -log D(fake), target 1
    assert generator_adversarial_loss(fake).item() == pytest.approx(expected)


def test_joint_loss_paper_weights():
    rec, adv = torch.tensor(2.0), torch.tensor(5.0)
    assert joint_loss(rec, adv).item() == pytest.approx(0.999 * 2 + 0.001 * 5)
    assert joint_loss(rec, adv, 1.0, 0.0).item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("setting", "kind", "expected"),
    [
        # 6x6 image, 2x2 dropped block; pred 0, target 1 on the hole (error 1) and 3 elsewhere
        # (error 9); overlap 1 px: a 12 px band around the hole, weighted 10
        ("paper", "random-region", 4 * 1 / 4),  # the dropped pixels only
        ("paper", "random-block", (4 * 1 + 10 * 12 * 9) / 16),  # hole + the 10x band
        ("paper", "center", (4 * 1 + 10 * 12 * 9) / 16),
        ("overlap", "random-region", (4 * 1 + 10 * 12 * 9) / 16),  # the earlier random loss
        ("hole", "center", 1.0),
        ("whole", "random-region", (4 * 1 + 32 * 9) / 36),  # train_random.lua's plain L2
    ],
)
def test_region_weighting_hand_computed(setting, kind, expected):
    from cebench.pretrain.masks import resolve_region_weighting
    from cebench.pretrain.methods.context_encoder import region_target

    hole = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    hole[..., 2:4, 2:4] = True
    images = torch.where(hole, 1.0, 3.0).expand(1, 3, 6, 6)
    weighting = resolve_region_weighting(setting, kind)
    target, w = region_target(images, hole, 6, 1, 10.0, False, weighting)
    loss = reconstruction_loss(torch.zeros_like(target), target, w)
    assert loss.item() == pytest.approx(expected)


def test_random_region_loss_weight_stays_on_the_dropped_pixels():
    """With the paper's setting no loss weight falls on visible pixels of a random region; the
    overlap band around a random-region mask carries most of it."""
    from cebench.pretrain.masks import make_masks, region_loss_weights

    g = torch.Generator().manual_seed(0)
    hole = make_masks("random-region", 8, 64, region=32, overlap=4, coverage=0.25, generator=g)
    paper = region_loss_weights(hole, "hole", 4)
    assert paper[~hole].sum() == 0 and paper[hole].sum() == hole.sum()
    band = region_loss_weights(hole, "overlap", 4)
    assert band[~hole].sum() > 0.7 * band.sum()
