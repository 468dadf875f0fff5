"""Relative position of two patches ("context prediction": Doersch, Gupta, Efros, "Unsupervised
Visual Representation Learning by Context Prediction", ICCV 2015; the paper's Table 2 row
"Doersch et al., relative context").

    cebench pretrain --data DIR --config small-relative-position --out runs/relpos
    cebench pretrain --data DIR --method relative-position --mask none \
        method_kwargs='{gap_ratio: 0.5, colour: project}' --out runs/relpos

Task: a 3x3 grid of patches is laid over the image; the network sees the centre patch and one
of its 8 neighbours and classifies which neighbour it is (8 classes, Doersch's Fig. 2 order:
row-major, top-left = 0, the centre skipped: see NEIGHBOURS). Network (late fusion, as the
paper's pair network): one shared encoder (the config's registry encoder) per patch, global
average pooling of its last stage and a shared fc6 (+ ReLU) per patch, then fc7 (+ ReLU) over the
two concatenated fc6 outputs and fc8 to the 8 classes. Only the encoder goes into encoder.pt,
built for model.input_size like every other arm (or for `encoder_size`; its convolutions run at
the patch size here).

The paper's precautions against trivial shortcuts (method_kwargs, RelativePositionOptions):
- gaps between the patches (Doersch: 96 px patches, 48 px gap: gap_ratio 0.5), so low-level cues
  across a shared border (lines, textures continuing) do not give the answer away;
- jitter: each patch moves by up to `jitter_ratio` of its side in each direction (Doersch: 7 px
  of 96);
- against chromatic aberration (the network finding a patch's place in the lens from colour
  fringes): `colour: drop` keeps one random colour channel per patch and replaces the two others
  by Gaussian noise with 1/100 of the kept channel's standard deviation (Doersch's colour
  dropping); `colour: project` removes the green-magenta component of every pixel (the
  projection the paper also uses, which shifts green and magenta towards grey; here an
  orthogonal projection in RGB); `none` turns it off.
Not done here: the paper's random downsampling of some patches (to as little as 100 pixels),
and its image rescaling (150K-450K pixels); patches are taken from the model.input_size crop.
One centre/neighbour pair per image, as the paper (`all_positions: true`: all 8 pairs of every
image, 8x the batch). Adam with the config's optim section (the paper: SGD).

Every random choice of a step (neighbours, grid offset, jitter, kept channel, noise) comes from a
generator seeded with (train.seed, step), drawn for the global batch and sliced by process, so the
pairs do not depend on the process count and a resumed run repeats them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cebench.core.distributed import average_gradients
from cebench.core.errors import ConfigError
from cebench.pretrain.methods.base import PretrainMethod, autocast, register_method
from cebench.pretrain.models import Encoder, build_encoder
from cebench.pretrain.train_data import _seed

# (row, column) offset of the neighbour from the centre patch, for labels 0..7 (Doersch Fig. 2)
NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1),           (0, 1),
    (1, -1),  (1, 0),  (1, 1),
)  # fmt: skip
# green-magenta axis in RGB; `colour: project` removes each pixel's component along it
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5


@dataclass
class RelativePositionOptions:
    patch: int = 0  # patch side in px; 0 = the largest that fits model.input_size with gap + jitter
    gap_ratio: float = 0.5  # gap between neighbouring patches / patch side (Doersch: 48 / 96)
    jitter_ratio: float = 0.075  # largest shift in each direction / patch side (Doersch: 7 / 96)
    colour: Literal["drop", "project", "none"] = "drop"  # against chromatic aberration
    hidden: int = 512  # width of fc6 (per patch) and fc7 (the pair)
    all_positions: bool = False  # all 8 neighbours of each image instead of one random one
    # input size written into encoder.pt (the transfer harnesses' default); 0 = model.input_size.
    # Doersch: 96 px patches from ~400 px images, transfer at 227 px (paper-alexnet-relative-position)
    encoder_size: int = 0

    def validate(self) -> None:
        if self.patch < 0 or self.hidden < 1 or self.encoder_size < 0:
            raise ConfigError(
                "method_kwargs.patch and method_kwargs.encoder_size must be >= 0, "
                "method_kwargs.hidden >= 1"
            )
        if self.gap_ratio < 0 or self.jitter_ratio < 0:
            raise ConfigError("method_kwargs.gap_ratio and method_kwargs.jitter_ratio must be >= 0")


def patch_geometry(size: int, opts: RelativePositionOptions) -> tuple[int, int, int]:
    """(patch, gap, jitter) in px for a `size` px image: the grid (3 patches, 2 gaps) plus the
    jitter on both sides must fit; ConfigError naming the sizes if it does not."""

    def parts(p: int) -> tuple[int, int, int]:
        return p, round(p * opts.gap_ratio), round(p * opts.jitter_ratio)

    def span(p: int) -> int:
        _, g, j = parts(p)
        return 3 * p + 2 * g + 2 * j

    if opts.patch:
        if span(opts.patch) > size:
            raise ConfigError(
                f"method_kwargs.patch={opts.patch} with gap and jitter needs {span(opts.patch)} px; "
                f"model.input_size is {size}"
            )
        return parts(opts.patch)
    p = int(size / (3 + 2 * opts.gap_ratio + 2 * opts.jitter_ratio))
    while p > 0 and span(p) > size:
        p -= 1
    if p < 2:
        raise ConfigError(f"model.input_size={size} px leaves no room for a 3x3 patch grid")
    return parts(p)


def pair_corners(
    labels: torch.Tensor,
    size: int,
    patch: int,
    gap: int,
    jitter: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left (row, column) corners [N, 2] of the centre patch and of neighbour `labels[i]`.

    The 3x3 grid (pitch patch + gap) is placed at a random offset that leaves `jitter` px on every
    side, then each patch moves by a uniform integer in [-jitter, jitter] in each direction."""
    n, dev = labels.shape[0], labels.device
    gen_dev = generator.device if generator is not None else dev
    span = 3 * patch + 2 * gap
    slack = size - span - 2 * jitter
    origin = jitter + torch.randint(0, slack + 1, (n, 2), generator=generator, device=gen_dev)
    shift = torch.randint(-jitter, jitter + 1, (n, 2, 2), generator=generator, device=gen_dev)
    origin, shift = origin.to(dev), shift.to(dev)
    pitch = patch + gap
    offsets = torch.tensor(NEIGHBOURS, device=dev)[labels] + 1  # grid cell (row, col) in 0..2
    centre = origin + pitch + shift[:, 0]
    other = origin + offsets * pitch + shift[:, 1]
    return centre, other


def crop_patches(images: torch.Tensor, index: torch.Tensor, corners: torch.Tensor, patch: int):
    """Patches [N,C,patch,patch]: images[index[i]] cut at corners[i] (top-left row, column)."""
    ar = torch.arange(patch, device=images.device)
    rows = (corners[:, 0:1] + ar)[:, :, None]  # [N, P, 1]
    cols = (corners[:, 1:2] + ar)[:, None, :]  # [N, 1, P]
    out = images[index[:, None, None], :, rows, cols]  # [N, P, P, C]
    return out.permute(0, 3, 1, 2).contiguous()


def drop_colour(patches: torch.Tensor, keep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Keep channel `keep[i]` of patch i; the others become `noise` (unit Gaussian) scaled to 1/100
    of the kept channel's standard deviation (Doersch's colour dropping)."""
    kept = patches.gather(1, keep.view(-1, 1, 1, 1).expand(-1, 1, *patches.shape[2:]))
    std = kept.flatten(1).std(1, unbiased=False).view(-1, 1, 1, 1)
    is_kept = F.one_hot(keep, patches.shape[1]).bool().view(*keep.shape, -1, 1, 1)
    return torch.where(is_kept, patches, noise * std / 100)


def project_colour(patches: torch.Tensor) -> torch.Tensor:
    """Every pixel without its component along the green-magenta axis (`GREEN_MAGENTA`)."""
    a = GREEN_MAGENTA.to(patches.device, patches.dtype).view(1, 3, 1, 1)
    return patches - (patches * a).sum(1, keepdim=True) * a


class RelativePositionNet(nn.Module):
    """Shared encoder + pooled fc6 per patch; fc7, fc8 over the concatenated pair -> 8 logits."""

    def __init__(self, encoder: Encoder, hidden: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc6 = nn.Sequential(nn.Linear(encoder.num_features, hidden), nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True))
        self.fc8 = nn.Linear(hidden, len(NEIGHBOURS))

    def forward(self, centre: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        both = self.fc6(self.encoder(torch.cat([centre, other])).mean(dim=(2, 3)))
        a, b = both.chunk(2)
        return self.fc8(self.fc7(torch.cat([a, b], 1)))


@register_method("relative-position")
class RelativePosition(PretrainMethod):
    uses_fill = False
    options_class = RelativePositionOptions

    @classmethod
    def check(cls, cfg: Any) -> None:
        patch_geometry(cfg.model.input_size, cls.options(cfg))  # the grid fits; the mask is unused

    def build(self) -> None:
        cfg = self.cfg
        self.patch, self.gap, self.jitter = patch_geometry(cfg.model.input_size, self.opts)
        self.enc_name = cfg.model.encoder
        size = self.opts.encoder_size or cfg.model.input_size
        self.enc_kwargs = {**cfg.model.encoder_kwargs, "input_size": size}
        encoder = build_encoder(self.enc_name, **self.enc_kwargs)
        try:
            encoder.output_shape(self.patch)
        except RuntimeError:
            raise ConfigError(
                f"encoder {self.enc_name} cannot take {self.patch} px patches (model.input_size "
                f"{cfg.model.input_size}); raise model.input_size or method_kwargs.patch"
            ) from None
        self.models["net"] = self.prepare(RelativePositionNet(encoder, self.opts.hidden))
        self.optims["net"] = self.adam(self.models["net"], cfg.optim.lr)
        self.pairs: tuple[torch.Tensor, torch.Tensor] | None = None

    def make_pairs(
        self, images: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centre patches, neighbour patches, labels) of this process's images for `step`."""
        cfg, dev, o = self.cfg, images.device, self.opts
        gen = torch.Generator(device=dev).manual_seed(_seed(cfg.train.seed, step, 23))
        local, rank = images.shape[0], self.dist.rank
        per = len(NEIGHBOURS) if o.all_positions else 1
        n = cfg.train.batch_size * per  # pairs of the global batch, drawn on every process alike
        if o.all_positions:
            labels = torch.arange(per, device=dev).repeat(cfg.train.batch_size)
        else:
            # one of the 8 neighbours per image (not `per`, the pairs per image: that was 1, so
            # every label was 0 and the task a constant answer)
            labels = torch.randint(0, len(NEIGHBOURS), (n,), generator=gen, device=dev)
        centre, other = pair_corners(
            labels, images.shape[-1], self.patch, self.gap, self.jitter, gen
        )
        keep = torch.randint(0, 3, (2, n), generator=gen, device=dev)
        noise = torch.randn(2, n, 3, self.patch, self.patch, generator=gen, device=dev)
        mine = slice(rank * local * per, (rank + 1) * local * per)
        index = torch.arange(local, device=dev).repeat_interleave(per)
        a = crop_patches(images, index, centre[mine], self.patch)
        b = crop_patches(images, index, other[mine], self.patch)
        if o.colour == "drop":
            a = drop_colour(a, keep[0, mine], noise[0, mine])
            b = drop_colour(b, keep[1, mine], noise[1, mine])
        elif o.colour == "project":
            a, b = project_colour(a), project_colour(b)
        return a, b, labels[mine]

    def step(
        self, images: torch.Tensor, labels: torch.Tensor | None, step: int
    ) -> dict[str, torch.Tensor]:
        net, opt = self.models["net"], self.optims["net"]
        a, b, target = self.make_pairs(images, step)
        a, b = (t.contiguous(memory_format=self.fmt) for t in (a, b))
        opt.zero_grad(set_to_none=True)
        with autocast(images.device, self.bf16):
            logits = net(a, b)
        loss = F.cross_entropy(logits.float(), target)  # equal per-process batches: plain mean
        loss.backward()
        average_gradients(list(net.parameters()), self.dist.world_size)
        opt.step()
        self.pairs = (a[:8].detach(), b[:8].detach())
        acc = (logits.detach().argmax(1) == target).float().mean()
        return {"loss": loss.detach(), "acc": acc}

    def sample_rows(self, images: torch.Tensor) -> list[torch.Tensor] | None:
        """Centre patches above their neighbours, as the network saw them (colour dropped)."""
        return list(self.pairs) if self.pairs is not None else None

    def meta(self) -> dict[str, Any]:
        return {"mask": None, "patch": self.patch, "gap": self.gap, "jitter": self.jitter}

    def encoder(self) -> tuple[nn.Module, str, dict[str, Any]]:
        return self.models["net"].encoder, self.enc_name, self.enc_kwargs
