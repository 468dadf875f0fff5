"""Region masks: exact centre placement, coverage bounds and statistics, determinism, loss weights.

.venv/bin/python -m pytest -q tests/test_masks.py
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cebench.core.errors import ConfigError
from cebench.pretrain.masks import (
    block_masks_from_uniform,
    center_masks,
    center_region_start,
    fill_holes,
    loss_weights,
    make_masks,
    mask_draw_shapes,
    masks_from_draws,
    random_block_masks,
    random_region_masks,
    shape_bank_from_label_maps,
)


def _coverage(m: torch.Tensor) -> torch.Tensor:
    return m.double().mean((1, 2, 3))


def _toy_bank() -> torch.Tensor:
    lm = torch.zeros(40, 50, dtype=torch.long)
    lm[5:30, 10:20] = 1  # a 25x10 bar
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(50), indexing="ij")
    lm[(yy - 20) ** 2 + (xx - 35) ** 2 < 100] = 2  # a disc
    lm[0:3, :] = 255  # ignore label: not a shape
    return shape_bank_from_label_maps([lm], side=32)


def test_center_mask_matches_released_code():
    # train.lua, fineSize 128, overlapPred 4: hole = rows/cols 37..92 (1-based) -> 36..91 here.
    m = center_masks(3, 128, region=64, overlap=4)
    assert m.shape == (3, 1, 128, 128) and m.dtype == torch.bool
    idx = m[0, 0].nonzero()
    assert idx.min(0).values.tolist() == [36, 36] and idx.max(0).values.tolist() == [91, 91]
    assert int(m[0].sum()) == 56 * 56 and torch.equal(m[0], m[2])
    assert center_region_start(128, 64) == 32


def test_center_weights_are_released_wtl2_matrix():
    # Within the 64 px predicted region: 1 on the inner 56x56, 10 on the 4 px band; 0 outside.
    w = loss_weights(center_masks(1, 128, 64, 4), overlap=4)[0, 0]
    region = w[32:96, 32:96]
    expected = torch.full((64, 64), 10.0)
    expected[4:60, 4:60] = 1.0
    assert torch.equal(region, expected)
    assert float(w.sum()) == float(expected.sum())  # nothing outside the region


def test_loss_weights_hand_checked_8x8():
    hole = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    hole[0, 0, 3:5, 3:5] = True
    w = loss_weights(hole, overlap=1, border_weight=10.0)[0, 0]
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 10.0
    expected[3:5, 3:5] = 1.0
    assert torch.equal(w, expected)
    assert torch.equal(loss_weights(hole, overlap=0)[0, 0], hole[0, 0].float())


def test_loss_weights_match_naive_chebyshev_band():
    hole = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)) < 0.1
    w = loss_weights(hole, overlap=2, border_weight=10.0)
    ref = torch.zeros(2, 1, 12, 12)
    for b in range(2):
        for i in range(12):
            for j in range(12):
                near = hole[b, 0, max(0, i - 2) : i + 3, max(0, j - 2) : j + 3].any()
                ref[b, 0, i, j] = 1.0 if hole[b, 0, i, j] else (10.0 if near else 0.0)
    assert torch.equal(w, ref)


def test_fill_holes_sets_only_dropped_pixels():
    x = torch.rand(2, 3, 8, 8)
    hole = center_masks(2, 8, region=4, overlap=0)
    fill = torch.tensor([0.1, -0.2, 0.3])
    y = fill_holes(x, hole, fill)
    assert torch.equal(y[:, :, 2:6, 2:6], fill.view(1, 3, 1, 1).expand(2, 3, 4, 4))
    assert torch.equal(y[~hole.expand_as(x)], x[~hole.expand_as(x)])


@pytest.mark.parametrize("kind", ["center", "random-block", "random-region", "none"])
def test_shapes_dtype_device(kind):
    g = torch.Generator().manual_seed(0)
    m = make_masks(kind, 5, 32, region=16, overlap=2, generator=g, device="cpu")
    assert m.shape == (5, 1, 32, 32) and m.dtype == torch.bool and m.device.type == "cpu"
    assert (kind == "none") == (not bool(m.any()))


def test_random_block_coverage_statistics():
    m = random_block_masks(500, 64, coverage=0.25, generator=torch.Generator().manual_seed(1))
    c = _coverage(m)
    assert float(c.max()) <= 0.25 and float(c.min()) > 0  # never above 1/4, never empty
    assert 0.12 < float(c.mean()) < 0.22  # several blocks on average (measured: 0.17)
    # possibly overlapping rectangles: many masks are not a single rectangle
    rows, cols = m.any(3).sum((1, 2)), m.any(2).sum((1, 2))
    assert float((rows * cols > m.sum((1, 2, 3))).float().mean()) > 0.5


def test_random_region_noise_covers_exactly_the_quantile():
    g = torch.Generator().manual_seed(2)
    for size in (37, 128):  # exact count, also where bicubic values tie
        c = _coverage(random_region_masks(64, size, coverage=0.25, generator=g))
        assert torch.all(c == math.floor(0.25 * size * size) / (size * size))
    m = random_region_masks(500, 64, coverage=0.25, generator=g)
    # blobs, not salt-and-pepper: most hole pixels have a hole pixel to their right
    right = (m[..., :, :-1] & m[..., :, 1:]).sum() / m[..., :, :-1].sum()
    assert float(right) > 0.8
    assert not torch.equal(m[0], m[1])  # one mask per sample, unlike the released trainer


def test_random_region_from_shape_bank():
    bank = _toy_bank()
    assert bank.shape == (2, 32, 32) and bank.dtype == torch.bool
    m = random_region_masks(400, 64, 0.25, shapes=bank, generator=torch.Generator().manual_seed(3))
    c = _coverage(m)
    assert float(c.max()) <= 0.25 and 0.1 < float(c.mean()) < 0.25
    assert float((c == 0).float().mean()) < 0.01
    with pytest.raises(ConfigError, match="non-empty"):
        random_region_masks(1, 64, shapes=torch.zeros(0, 8, 8))


@pytest.mark.parametrize("kind", ["random-block", "random-region"])
def test_seeded_generator_is_deterministic_and_leaves_global_rng(kind):
    state = torch.get_rng_state()
    a = make_masks(kind, 4, 32, generator=torch.Generator().manual_seed(7))
    b = make_masks(kind, 4, 32, generator=torch.Generator().manual_seed(7))
    c = make_masks(kind, 4, 32, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown mask kind"):
        make_masks("square", 1, 32)
    with pytest.raises(ConfigError, match="overlap"):
        center_masks(1, 64, region=8, overlap=4)
    with pytest.raises(ConfigError, match="coverage"):
        random_block_masks(1, 64, coverage=1.5)


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["random-block", "random-region", "random-region-shapes"]),
    batch=st.integers(1, 4),
    size=st.integers(8, 48),
    coverage=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_coverage_shape_dtype(kind, batch, size, coverage, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "random-region-shapes":
        m = random_region_masks(batch, size, coverage, shapes=_toy_bank(), generator=g)
    else:
        m = make_masks(kind, batch, size, coverage=coverage, generator=g)
    assert m.shape == (batch, 1, size, size) and m.dtype == torch.bool
    assert float(_coverage(m).max()) <= coverage + 1e-9


# ----- the split used by the CUDA-graph step: draws (outside the graph), then tensor ops
SHAPE_BANK = torch.zeros(3, 16, 16, dtype=torch.bool)
SHAPE_BANK[0, 4:12, 4:12] = True
SHAPE_BANK[1, 2:14, 6:10] = True
SHAPE_BANK[2, 8:, :8] = True


@pytest.mark.parametrize(
    "kind,shapes",
    [
        ("random-block", None),
        ("random-region", None),
        ("random-region", SHAPE_BANK),
        ("center", None),
        ("none", None),
    ],
)
def test_masks_from_draws_equal_make_masks_bit_for_bit(kind, shapes):
    """The graph step's masks (draws into static buffers, then `masks_from_draws`) are the eager
    step's masks exactly: same generator, same draws in the same order, same ops."""
    kw = dict(region=16, overlap=2, coverage=0.25, shapes=shapes)
    for seed in range(3):
        eager = make_masks(kind, 5, 32, generator=torch.Generator().manual_seed(seed), **kw)
        gen = torch.Generator().manual_seed(seed)
        draws = [torch.rand(s, generator=gen) for s in mask_draw_shapes(kind, 5, 32, shapes=shapes)]
        split = masks_from_draws(kind, draws, 5, 32, **kw)
        assert split.dtype == torch.bool and split.shape == (5, 1, 32, 32)
        assert torch.equal(split, eager), (kind, seed)


def _naive_blocks(u: torch.Tensor, size: int, coverage: float) -> torch.Tensor:
    """Per-sample, per-block Python loops over the same draws: the spec of random_block_masks."""
    b, k, _ = u.shape
    lo = max(1, size // 8)
    hi = max(lo, int(size * math.sqrt(coverage / 2)))
    out = torch.zeros(b, 1, size, size, dtype=torch.bool)
    for i in range(b):
        n = 1 + min(int(float(u[i, 0, 4]) * k), k - 1)
        union = torch.zeros(size, size, dtype=torch.bool)
        for j in range(n):
            h = min(int(lo + float(u[i, j, 0]) * (hi - lo + 1)), hi)
            w = min(int(lo + float(u[i, j, 1]) * (hi - lo + 1)), hi)
            top, left = (
                int(float(u[i, j, 2]) * (size - h + 1)),
                int(float(u[i, j, 3]) * (size - w + 1)),
            )
            cand = union.clone()
            cand[top : top + h, left : left + w] = True
            if cand.sum() > coverage * size * size + 1e-6:
                break
            union = cand
        out[i, 0] = union
    return out


def test_block_masks_from_uniform_match_a_naive_loop():
    u = torch.rand(16, 8, 5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(block_masks_from_uniform(u, 32, 0.25), _naive_blocks(u, 32, 0.25))


def test_draw_shapes_are_static_and_unknown_kind_refused():
    """Static shapes: the draws depend on (kind, batch, size, bank or not), never on the step."""
    assert mask_draw_shapes("random-block", 4, 32) == [(4, 8, 5)]
    assert mask_draw_shapes("random-region", 4, 32, shapes=SHAPE_BANK) == [(16, 7)]
    noise = mask_draw_shapes("random-region", 4, 64)
    assert noise == [(4, 1, math.ceil(64 * 0.06) + 4, math.ceil(64 * 0.06) + 4), (4, 2)]
    assert mask_draw_shapes("center", 4, 32) == mask_draw_shapes("none", 4, 32) == []
    with pytest.raises(ConfigError, match="unknown mask kind"):
        mask_draw_shapes("blob", 4, 32)
