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
