"""Context-encoder losses (Pathak et al. 2016, Sec. 3.2), pure functions of tensors.

    from cebench.pretrain.losses import reconstruction_loss, discriminator_loss, generator_adversarial_loss, joint_loss
    rec = reconstruction_loss(pred, target, weights)          # weighted L2 over the predicted pixels
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    g_loss = joint_loss(rec, generator_adversarial_loss(D(fake)))   # 0.999 * rec + 0.001 * adv

The discriminator returns logits; the sigmoid of the paper's D(x) is applied inside
`binary_cross_entropy_with_logits`, which is the numerically stable form of log(sigmoid(.)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum(w * (pred - target)^2) / (C * #{pixels with w > 0}).

    The paper's L_rec = ||M ⊙ (x - F((1-M) ⊙ x))||² as a weighted mean over the predicted pixels:
    `weights` [B,1,H,W] (see `cebench.pretrain.masks.loss_weights`) is 1 on the hole and 10 on the overlap
    band (the released code scales the MSE gradient elementwise by the same matrix). It broadcasts
    over the C colour channels. All-zero weights give 0 (nothing to predict).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    if weights.dim() != pred.dim() or weights.shape[1] != 1 or weights.shape[2:] != pred.shape[2:]:
        raise ValueError(
            f"weights {tuple(weights.shape)} must be [B,1,H,W] for pred {tuple(pred.shape)}"
        )
    weights = weights.to(pred.dtype)
    n = (weights > 0).sum() * pred.shape[1]
    return (weights * (pred - target) ** 2).sum() / n.clamp(min=1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-(log D(x) + log(1 - D(F(x̂)))) / 2: BCE-with-logits, real -> 1, fake -> 0, mean of both."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(F(x̂)): BCE-with-logits of the fakes against label 1 (the non-saturating form
    used by DCGAN and the released code, instead of minimising log(1 - D))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def joint_loss(
    rec: torch.Tensor, adv: torch.Tensor, lambda_rec: float = 0.999, lambda_adv: float = 0.001
) -> torch.Tensor:
    """L = lambda_rec * L_rec + lambda_adv * L_adv (paper: 0.999 and 0.001)."""
    return lambda_rec * rec + lambda_adv * adv
