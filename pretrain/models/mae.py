"""MAE's masked autoencoder around a timm ViT encoder (He, Chen, Xie, Li, Dollar, Girshick,
"Masked Autoencoders Are Scalable Vision Learners", CVPR 2022), the network of
`--method masked-patches` when the encoder is a vision transformer.

    from cebench.pretrain.models import build_encoder
    from cebench.pretrain.models.mae import MaskedAutoencoder, masked_patch_loss, patchify, split_patches
    enc = build_encoder("timm", model_name="vit_tiny_patch16_224", input_size=32,
                        model_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2})
    net = MaskedAutoencoder(enc, width=512, depth=8, heads=16)      # MAE's decoder (paper: 8 x 512)
    keep, restore, dropped = split_patches(torch.rand(B, net.num_patches), drop=12)
    pred = net(images, keep, restore)                              # [B, N, patch*patch*3]
    loss = masked_patch_loss(pred, patchify(images, net.patch), dropped, norm_pix=False)

As MAE (its `models_mae.py`): the position embeddings are added to every patch token, then the
dropped tokens are removed, and the encoder (the class token and the ViT blocks) runs on the
visible tokens only; the decoder embeds them to its own width, puts one learned mask token at
every dropped position (the order restored), adds fixed 2-D sine-cosine position embeddings and
runs `depth` transformer blocks; a linear layer predicts each patch's pixels, and the loss is the
mean squared error on the dropped patches only, per pixel (optionally against per-patch
normalised targets, MAE's norm_pix_loss). Not as MAE: the encoder is timm's ViT with its learned
position embeddings (MAE fixes them to sine-cosine), and timm's feature getter drops the ViT's
final norm, so the decoder starts with a LayerNorm of its own. The encoder module is the one
saved to encoder.pt: a whole ViT that transfer runs on all patches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cebench.core.errors import ConfigError
from cebench.pretrain.models.timm_encoder import vision_transformer


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B,C,S,S] -> [B, (S/patch)^2, patch*patch*C], patches in row-major order (MAE's layout:
    each row is one patch's pixels, row by row, channels last)."""
    b, c, s, _ = images.shape
    side = s // patch
    x = images.reshape(b, c, side, patch, side, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, side * side, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """The inverse of `patchify`: [B, N, patch*patch*C] -> [B,C,S,S]."""
    b, n, _ = patches.shape
    side = int(round(n**0.5))
    x = patches.reshape(b, side, side, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, side * patch, side * patch)


def split_patches(
    noise: torch.Tensor, drop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's `random_masking` from uniform noise [B, N]: the `drop` patches with the smallest
    noise are dropped (as `patch_grid_masks` does, so the same noise drops the same patches).
    Returns (keep ids [B, N-drop], restore ids [B, N]: where each patch sits in the sequence
    kept-then-dropped, dropped bool [B, N])."""
    order = noise.argsort(1)  # dropped first
    shuffle = torch.cat([order[:, drop:], order[:, :drop]], 1)  # kept first, as MAE
    restore = shuffle.argsort(1)
    dropped = torch.zeros_like(noise, dtype=torch.bool)
    dropped.scatter_(1, order[:, :drop], True)
    return shuffle[:, : noise.shape[1] - drop], restore, dropped


def masked_patch_loss(
    pred: torch.Tensor, target: torch.Tensor, dropped: torch.Tensor, norm_pix: bool = False
) -> torch.Tensor:
    """Mean squared error per pixel on the dropped patches only (MAE's `forward_loss`); pred and
    target [B, N, P], dropped bool [B, N]. norm_pix: each target patch normalised to zero mean and
    unit variance first (MAE's norm_pix_loss, variance + 1e-6)."""
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    w = dropped.to(per_patch.dtype)
    return (per_patch * w).sum() / w.sum()


def sincos_position_embedding(dim: int, side: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine embedding, [side*side, dim]: half the channels encode the row,
    half the column, each as sin and cos of the position over 10000^(k / (dim/4))."""
    if dim % 4:
        raise ConfigError(f"method_kwargs.decoder_width must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], 1)

    grid = np.concatenate([embed(cols), embed(rows)], 1)  # MAE: first half from w, then h
    return torch.from_numpy(grid).float()


class MAEDecoder(nn.Module):
    """Encoder tokens (prefix + visible) -> pixels of every patch [B, N, patch*patch*3]."""

    def __init__(
        self,
        enc_dim: int,
        side: int,
        prefix: int,
        patch: int,
        width: int = 512,
        depth: int = 8,
        heads: int = 16,
        channels: int = 3,
    ) -> None:
        from timm.models.vision_transformer import Block

        super().__init__()
        if width % heads:
            raise ConfigError(
                f"method_kwargs.decoder_width ({width}) must be a multiple of "
                f"method_kwargs.decoder_heads ({heads})"
            )
        self.prefix = prefix
        self.enc_norm = nn.LayerNorm(
            enc_dim
        )  # the ViT's final norm (timm's feature getter drops it)
        self.embed = nn.Linear(enc_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        pos = torch.cat([torch.zeros(prefix, width), sincos_position_embedding(width, side)])
        self.register_buffer("pos", pos[None], persistent=False)  # fixed, as MAE
        self.blocks = nn.Sequential(
            *[Block(width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch * patch * channels)
        nn.init.normal_(self.mask_token, std=0.02)  # MAE's init

    def forward(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.enc_norm(latent))
        b, n = restore.shape
        kept = x[:, self.prefix :]
        masks = self.mask_token.expand(b, n - kept.shape[1], -1)
        tokens = torch.cat([kept, masks], 1)  # kept-then-dropped order
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, : self.prefix], tokens], 1) + self.pos
        x = self.norm(self.blocks(x))
        return self.pred(x[:, self.prefix :])


class MaskedAutoencoder(nn.Module):
    """A timm ViT `TimmEncoder` (trained in place) + `MAEDecoder`; see the module docstring."""

    def __init__(self, encoder: nn.Module, width: int = 512, depth: int = 8, heads: int = 16):
        super().__init__()
        vit = vision_transformer(encoder)
        if vit is None:
            raise ConfigError("the MAE network needs a timm vision transformer encoder")
        self.encoder = encoder
        self.patch = vit_patch_size(vit)
        self.side = encoder.input_size // self.patch
        self.num_patches = self.side * self.side
        self.decoder = MAEDecoder(
            vit.embed_dim, self.side, vit.num_prefix_tokens, self.patch, width, depth, heads
        )

    @property
    def vit(self) -> nn.Module:
        return vision_transformer(self.encoder)

    def encode_visible(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """[B, prefix + K, D]: the ViT on the kept patch tokens only (position embeddings added
        before dropping), as MAE's `forward_encoder`."""
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(images))  # [B, prefix + N, D]
        p = vit.num_prefix_tokens
        visible = torch.gather(x[:, p:], 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        x = vit.norm_pre(torch.cat([x[:, :p], visible], 1))
        return vit.norm(vit.blocks(x))

    def forward(
        self, images: torch.Tensor, keep: torch.Tensor, restore: torch.Tensor
    ) -> torch.Tensor:
        return self.decoder(self.encode_visible(images, keep), restore)


def vit_patch_size(vit: nn.Module) -> int:
    size = vit.patch_embed.patch_size
    if size[0] != size[1]:
        raise ConfigError(f"masked-patches needs square ViT patches, got {tuple(size)}")
    return int(size[0])
