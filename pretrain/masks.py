"""Region masks for context encoders (Pathak et al. 2016, Sec. 3.3): which pixels are dropped.

A mask is a bool tensor [B, 1, H, W], True = dropped pixel ("hole"). Every generator works on a
whole batch at once on the given device, and the random ones draw only from the `generator` they
are given, so a seeded generator reproduces the same masks.

    import torch
    from cebench.pretrain.masks import make_masks, loss_weights, fill_holes
    g = torch.Generator().manual_seed(0)
    hole = make_masks("random-region", 8, 64, coverage=0.25, generator=g)   # bool[8,1,64,64]
    x_in = fill_holes(images, hole, fill=torch.tensor([0.0, 0.0, 0.0]))
    w = loss_weights(hole, overlap=4)                                          # 1 hole, 10 border

Kinds: "center" (one centred square), "random-block" (several possibly overlapping rectangles,
at most `coverage` of the image), "random-region" (arbitrary shapes, at most `coverage`), and
"none" (nothing dropped: the autoencoder baseline).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from cebench.core.errors import ConfigError
from cebench.pretrain.train_data import _seed

MaskKind = Literal["center", "random-block", "random-region", "none"]
MASK_KINDS: tuple[str, ...] = ("center", "random-block", "random-region", "none")

# Released code (train_random.lua): noise at 6% of full resolution, upscaled bicubically.
NOISE_RESOLUTION = 0.06
MAX_BLOCKS = 8  # random-block: rectangles drawn per sample (at most)
MAX_SHAPES = 4  # random-region with a shape bank: shapes drawn per sample (at most)


def _check_size(size: int, coverage: float | None = None) -> None:
    if size < 2:
        raise ConfigError(f"mask size must be >= 2 px, got {size}")
    if coverage is not None and not 0.0 < coverage <= 1.0:
        raise ConfigError(f"mask coverage must be in (0, 1], got {coverage}")


def center_region_start(size: int, region: int) -> int:
    """Top-left offset of the centred `region` x `region` square the generator predicts."""
    if not 0 < region <= size:
        raise ConfigError(f"mask region must be in [1, {size}] for {size} px images, got {region}")
    return (size - region) // 2


def center_masks(
    batch: int, size: int, region: int, overlap: int = 4, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The centred hole of side `region - 2*overlap` (released code: 128, 64, 4 -> 56 px hole).

    The hole sits inside the centred `region` square (see `center_region_start`), `overlap` px in
    from each of its sides; the generator predicts the whole region, so the border band gives it
    context to blend in.
    """
    _check_size(size)
    if overlap < 0 or region - 2 * overlap <= 0:
        raise ConfigError(f"mask overlap {overlap} leaves no hole in a {region} px region")
    top = center_region_start(size, region) + overlap
    hole = torch.zeros(batch, 1, size, size, dtype=torch.bool, device=device)
    side = region - 2 * overlap
    hole[:, :, top : top + side, top : top + side] = True
    return hole


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _union_within_coverage(pieces: torch.Tensor, coverage: float) -> torch.Tensor:
    """pieces bool[B, P, H, W] -> bool[B, 1, H, W]: union of the longest prefix of pieces whose
    union covers at most `coverage` of the image. The loop runs over the few pieces (P <= ~8),
    each step a batched OR; a sample stops growing at its first piece that would exceed the budget.
    """
    b, p, h, w = pieces.shape
    budget = coverage * h * w + 1e-6
    union = torch.zeros(b, h, w, dtype=torch.bool, device=pieces.device)
    growing = torch.ones(b, dtype=torch.bool, device=pieces.device)
    for k in range(p):
        cand = union | pieces[:, k]
        growing = growing & (cand.sum((1, 2)) <= budget)
        union = torch.where(growing.view(b, 1, 1), cand, union)
    return union.unsqueeze(1)


def random_block_masks(
    batch: int,
    size: int,
    coverage: float = 0.25,
    max_blocks: int = MAX_BLOCKS,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Several smaller, possibly overlapping rectangles covering at most `coverage` in total.

    Each sample draws 1..`max_blocks` blocks with sides uniform in [size/8, size*sqrt(coverage/2)]
    (so a block is at most half the allowed area) at uniform positions, and keeps blocks in order
    while their union stays within `coverage` (the paper: "up to 1/4 of the image").
    """
    _check_size(size, coverage)
    if max_blocks < 1:
        raise ConfigError(f"max_blocks must be >= 1, got {max_blocks}")
    u = _uniform((batch, max_blocks, 5), generator, device)
    return block_masks_from_uniform(u, size, coverage)


def block_masks_from_uniform(u: torch.Tensor, size: int, coverage: float) -> torch.Tensor:
    """`random_block_masks` from its uniform draws u [B, max_blocks, 5]: tensor ops only (no
    host sync, static shapes), so a CUDA graph can capture it (cebench.pretrain.graph_step)."""
    max_blocks, device = u.shape[1], u.device
    lo = max(1, size // 8)
    hi = max(lo, int(size * math.sqrt(coverage / 2)))
    hs = (lo + u[..., 0] * (hi - lo + 1)).long().clamp(max=hi)  # [B, K]
    ws = (lo + u[..., 1] * (hi - lo + 1)).long().clamp(max=hi)
    top = (u[..., 2] * (size - hs + 1)).long()
    left = (u[..., 3] * (size - ws + 1)).long()
    n_blocks = 1 + (u[:, 0, 4] * max_blocks).long().clamp(max=max_blocks - 1)  # [B], 1..K
    r = torch.arange(size, device=device)
    rows = (r.view(1, 1, -1) >= top[..., None]) & (r.view(1, 1, -1) < (top + hs)[..., None])
    cols = (r.view(1, 1, -1) >= left[..., None]) & (r.view(1, 1, -1) < (left + ws)[..., None])
    blocks = rows[..., :, None] & cols[..., None, :]  # [B, K, S, S]
    active = torch.arange(max_blocks, device=device).view(1, -1) < n_blocks.view(-1, 1)
    blocks = blocks & active[..., None, None]
    return _union_within_coverage(blocks, coverage)


def _noise_cells(size: int) -> int:
    return math.ceil(size * NOISE_RESOLUTION) + 4  # +4 cells: bicubic support and crop room


def _noise_region_masks(
    batch: int, size: int, coverage: float, generator: torch.Generator | None, device
) -> torch.Tensor:
    """Released code's random pattern: uniform noise at 6% resolution, bicubic upscaling, a random
    crop, thresholded. The released trainer (train_random.lua) thresholds one big pattern at 0.25,
    re-draws crops until 20-30% is covered and uses that one mask for the whole batch; here every
    sample gets its own crop, whose floor(coverage * H * W) lowest values form the hole, so each
    mask covers exactly that many pixels, never more than `coverage`."""
    cells = _noise_cells(size)
    noise = _uniform((batch, 1, cells, cells), generator, device)
    crop_u = _uniform((batch, 2), generator, device)
    return noise_masks_from_uniform(noise, crop_u, size, coverage)


def noise_masks_from_uniform(
    noise: torch.Tensor, crop_u: torch.Tensor, size: int, coverage: float
) -> torch.Tensor:
    """`_noise_region_masks` from its two uniform draws (noise [B, 1, c, c], crop offsets [B, 2]):
    tensor ops only, static shapes (capturable in a CUDA graph)."""
    batch, cells, device = noise.shape[0], noise.shape[-1], noise.device
    big = round(cells / NOISE_RESOLUTION)
    pattern = F.interpolate(noise, size=(big, big), mode="bicubic", align_corners=False)
    # Random crop per sample, batched with advanced indexing (no Python loop over the batch).
    margin = round(2 / NOISE_RESOLUTION)  # stay away from the border cells bicubic extrapolates
    span = big - size - 2 * margin
    off = (crop_u * (span + 1)).long().clamp(max=span) + margin
    r = torch.arange(size, device=device)
    ys = (off[:, 0:1] + r).view(batch, size, 1)
    xs = (off[:, 1:2] + r).view(batch, 1, size)
    crop = pattern[torch.arange(batch, device=device).view(-1, 1, 1), 0, ys, xs]  # [B, S, S]
    flat = crop.reshape(batch, -1)
    k = int(math.floor(coverage * size * size))
    if k == 0:
        return torch.zeros(batch, 1, size, size, dtype=torch.bool, device=device)
    # The k lowest values by index, not a threshold: ties could otherwise push a mask over k.
    idx = flat.topk(k, dim=1, largest=False).indices
    hole = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return hole.view(batch, 1, size, size)


def check_shape_bank(shapes: torch.Tensor) -> None:
    """Refuse a shape bank that cannot give holes (a host sync: done before any capture)."""
    if shapes.dim() != 3 or shapes.shape[0] == 0:
        raise ConfigError(
            f"random-region shapes must be a non-empty [K, h, w] tensor, got {tuple(shapes.shape)}"
        )
    if bool((shapes.flatten(1).float().mean(1) <= 0).any()):
        raise ConfigError("random-region shapes contain an empty mask")


def _shape_region_masks(
    batch: int,
    size: int,
    coverage: float,
    shapes: torch.Tensor,
    max_shapes: int,
    generator: torch.Generator | None,
    device,
) -> torch.Tensor:
    """Shapes from a bank [K, h, w], each randomly scaled, stretched, rotated, flipped (one batched
    affine `grid_sample`) and pasted at a random place; kept while the union is within coverage."""
    check_shape_bank(shapes)
    u = _uniform((batch * max_shapes, 7), generator, device)
    return shape_masks_from_uniform(u, shapes.to(device), batch, size, coverage)


def shape_masks_from_uniform(
    u: torch.Tensor, shapes: torch.Tensor, batch: int, size: int, coverage: float
) -> torch.Tensor:
    """`_shape_region_masks` from its uniform draws u [batch * max_shapes, 7] and a checked bank
    (`check_shape_bank`) on u's device: tensor ops only, static shapes (capturable)."""
    bank = shapes.to(device=u.device, dtype=torch.float32)
    area = bank.flatten(1).mean(1)  # fraction of its own frame each shape fills
    n, max_shapes = u.shape[0], u.shape[0] // batch
    pick = (u[:, 0] * bank.shape[0]).long().clamp(max=bank.shape[0] - 1)
    # Target area per shape in [coverage/8, coverage/2] of the image: a few shapes fill the budget.
    target = coverage * (0.125 + 0.375 * u[:, 1])
    zoom = torch.sqrt(target / area[pick])  # shape side relative to the image side
    stretch = torch.exp((u[:, 2] - 0.5) * 0.6)  # aspect deformation within [0.74, 1.35]
    angle = (u[:, 3] - 0.5) * 2 * math.pi
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    tx, ty = u[:, 5] * 2 - 1, u[:, 6] * 2 - 1  # centre anywhere in the image
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = flip / (zoom * stretch), 1 / (zoom / stretch)
    # theta maps output (image) coordinates to input (shape) coordinates: S^-1 R^-1 (p - t).
    a11, a12 = sx * cos, sx * sin
    a21, a22 = -sy * sin, sy * cos
    theta = torch.stack(
        [
            torch.stack([a11, a12, -(a11 * tx + a12 * ty)], 1),
            torch.stack([a21, a22, -(a21 * tx + a22 * ty)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    pasted = (
        F.grid_sample(bank[pick].unsqueeze(1), grid, mode="bilinear", align_corners=False) > 0.5
    )
    return _union_within_coverage(pasted.view(batch, max_shapes, size, size), coverage)


def random_region_masks(
    batch: int,
    size: int,
    coverage: float = 0.25,
    shapes: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    max_shapes: int = MAX_SHAPES,
) -> torch.Tensor:
    """Arbitrary-shaped holes covering at most `coverage` of the image, uncorrelated with it.

    `shapes` is a bank of binary masks [K, h, w] (the paper: PASCAL VOC 2012 segmentation objects,
    see `shape_bank_from_label_maps`); None uses the released code's thresholded noise pattern.
    """
    _check_size(size, coverage)
    if shapes is None:
        return _noise_region_masks(batch, size, coverage, generator, device)
    return _shape_region_masks(batch, size, coverage, shapes, max_shapes, generator, device)


def shape_bank_from_label_maps(label_maps: list[torch.Tensor], side: int = 64) -> torch.Tensor:
    """Object shapes for `random_region_masks`: every labelled class region of each int label map
    [H, W] (0 = background, 255 = ignore, as VOC SegmentationClass), cropped to its bounding box,
    padded to a square and resized to `side` px. Returns bool[K, side, side]."""
    out = []
    for lm in label_maps:
        for c in torch.unique(lm).tolist():
            if c in (0, 255):
                continue
            m = lm == c
            ys, xs = torch.nonzero(m, as_tuple=True)
            crop = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].float()
            h, w = crop.shape
            s = max(h, w)
            sq = F.pad(
                crop, ((s - w) // 2, s - w - (s - w) // 2, (s - h) // 2, s - h - (s - h) // 2)
            )
            out.append(
                F.interpolate(sq[None, None], size=(side, side), mode="bilinear")[0, 0] > 0.5
            )
    out = [m for m in out if bool(m.any())]
    if not out:
        raise ConfigError("no object shapes found in the given label maps")
    return torch.stack(out)


def make_masks(
    kind: str,
    batch: int,
    size: int,
    *,
    region: int | None = None,
    overlap: int = 4,
    coverage: float = 0.25,
    shapes: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Dispatch on `kind` ("center", "random-block", "random-region", "none") -> bool[B,1,S,S]."""
    if kind == "center":
        return center_masks(
            batch, size, region if region is not None else size // 2, overlap, device
        )
    if kind == "random-block":
        return random_block_masks(batch, size, coverage, generator=generator, device=device)
    if kind == "random-region":
        return random_region_masks(
            batch, size, coverage, shapes, generator=generator, device=device
        )
    if kind == "none":
        return torch.zeros(batch, 1, size, size, dtype=torch.bool, device=device)
    raise ConfigError(f"unknown mask kind {kind!r}; choose one of {list(MASK_KINDS)}")


def mask_draw_shapes(
    kind: str, batch: int, size: int, *, shapes: torch.Tensor | None = None
) -> list[tuple[int, ...]]:
    """The shapes of the uniform draws `make_masks(kind, ...)` takes from its generator, in order
    (none for "center" and "none"). With `masks_from_draws` it splits `make_masks` in two: the
    draws (a seeded generator, outside a CUDA graph) and everything after them (captured)."""
    if kind == "random-block":
        return [(batch, MAX_BLOCKS, 5)]
    if kind == "random-region" and shapes is None:
        cells = _noise_cells(size)
        return [(batch, 1, cells, cells), (batch, 2)]
    if kind == "random-region":
        return [(batch * MAX_SHAPES, 7)]
    if kind in ("center", "none"):
        return []
    raise ConfigError(f"unknown mask kind {kind!r}; choose one of {list(MASK_KINDS)}")


def masks_from_draws(
    kind: str,
    draws: list[torch.Tensor],
    batch: int,
    size: int,
    *,
    region: int | None = None,
    overlap: int = 4,
    coverage: float = 0.25,
    shapes: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """`make_masks` from the draws of `mask_draw_shapes` (made by the same generator in the same
    order, they give the same masks, bit for bit): tensor ops on the device, static shapes, no
    host sync (a shape bank is checked with `check_shape_bank` beforehand), so capturable."""
    _check_size(size, coverage)
    if kind == "random-block":
        return block_masks_from_uniform(draws[0], size, coverage)
    if kind == "random-region" and shapes is None:
        return noise_masks_from_uniform(draws[0], draws[1], size, coverage)
    if kind == "random-region":
        return shape_masks_from_uniform(draws[0], shapes, batch, size, coverage)
    return make_masks(kind, batch, size, region=region, overlap=overlap, device=device)


def loss_weights(hole: torch.Tensor, overlap: int, border_weight: float = 10.0) -> torch.Tensor:
    """float[B,1,H,W]: 1 on the hole, `border_weight` within `overlap` px outside it (a square
    dilation, as the released code's 4 px band around the 56 px hole), 0 elsewhere."""
    w = hole.float()
    if overlap > 0:
        k = 2 * overlap + 1  # a square max filter is separable: rows then columns, O(k) not O(k^2)
        dilated = F.max_pool2d(w, (k, 1), stride=1, padding=(overlap, 0))
        dilated = F.max_pool2d(dilated, (1, k), stride=1, padding=(0, overlap)) > 0
        w = w + (dilated & ~hole).float() * border_weight
    return w


# loss.region_weighting: which pixels the reconstruction loss covers, with what weight
REGION_WEIGHTINGS = ("paper", "overlap", "hole", "whole")


def resolve_region_weighting(weighting: str, kind: str) -> str:
    """ "overlap", "hole" or "whole" for `weighting` (`REGION_WEIGHTINGS`) and mask `kind`.

    "paper": the paper's L_rec = ||M ⊙ (x - F((1 - M) ⊙ x))||² over the dropped region M. For
    the centre and random-block masks that region carries the paper's overlap (the hole given to
    the encoder is `overlap` px smaller on each side than the region predicted, the band weighted
    10x): "overlap". For random regions the paper gives no overlap: the dropped pixels only,
    "hole" (an overlap band around an irregular shape would carry most of the weight, on pixels
    the encoder sees)."""
    if weighting not in REGION_WEIGHTINGS:
        raise ValueError(f"region weighting must be one of {REGION_WEIGHTINGS}, got {weighting!r}")
    if weighting == "paper":
        return "hole" if kind == "random-region" else "overlap"
    return weighting


def region_loss_weights(
    hole: torch.Tensor, weighting: str, overlap: int, border_weight: float = 10.0
) -> torch.Tensor:
    """float[B,1,H,W] loss weights for a resolved `weighting`: "overlap" (`loss_weights`: 1 on the
    hole, `border_weight` on the `overlap` px band around it), "hole" (1 on the dropped pixels
    only) or "whole" (1 everywhere: the plain whole-image L2 of the released `train_random.lua`)."""
    if weighting == "overlap":
        return loss_weights(hole, overlap, border_weight)
    if weighting == "hole":
        return hole.float()
    if weighting == "whole":
        return torch.ones_like(hole, dtype=torch.float32)
    raise ValueError(f"unresolved region weighting {weighting!r} (overlap, hole or whole)")


def fill_holes(images: torch.Tensor, hole: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Set dropped pixels to the per-channel `fill` value (the dataset mean, in the images' scale)."""
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return torch.where(hole, fill, images)


def batch_masks(
    kind: str,
    *,
    size: int,
    region: int,
    overlap: int,
    coverage: float,
    step: int,
    seed: int,
    global_batch: int,
    rank: int,
    world_size: int,
    device: torch.device,
    shapes: torch.Tensor | None = None,
) -> torch.Tensor:
    """This process's slice of the global batch's masks for `step`, made on the training device.

    The generator is seeded from (seed, step), so the masks do not depend on how many processes
    share the batch, nor on whether the run was resumed."""
    gen = torch.Generator(device=device).manual_seed(_seed(seed, step, 11))
    hole = make_masks(
        kind,
        global_batch,
        size,
        region=region,
        overlap=overlap,
        coverage=coverage,
        shapes=shapes,
        generator=gen,
        device=device,
    )
    local = global_batch // world_size
    return hole[rank * local : (rank + 1) * local]


def load_shape_bank(
    root: str, split: str, max_images: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Object shapes of the VOC segmentation masks of `root`'s `split` (the first `max_images`),
    for random regions as the paper's (`mask.shapes`): `shape_bank_from_label_maps` of them."""
    import sys

    from cebench.data import VOCSegmentation
    from cebench.data.voc import load_segmentation_mask

    voc = VOCSegmentation(root, split)
    maps = [
        torch.from_numpy(load_segmentation_mask(p, len(voc.classes)))
        for p in voc.masks[:max_images]
    ]
    bank = shape_bank_from_label_maps(maps)
    print(
        f"random-region shapes: {len(bank)} objects from {len(maps)} masks in {root}",
        file=sys.stderr,
    )
    return bank.to(device)
