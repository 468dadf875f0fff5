"""The self-supervised methods after the context encoder: relative position (Doersch et al. 2015),
rotation (Gidaris et al. 2018), masked patches (He et al. 2022). Pretext labels against hand-made
cases, loss goes down on a tiny run, a suite cell runs each, resume is bit-exact."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cebench.cli import main as cebench
from cebench.core.distributed import DistInfo
from cebench.core.errors import ConfigError
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.pretrain.config import check_consistency, load_pretrain_config
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.masks import fill_holes
from cebench.pretrain.methods import get_method
from cebench.pretrain.methods.masked_patches import patch_grid_masks
from cebench.pretrain.methods.relative_position import (
    RelativePositionOptions,
    crop_patches,
    drop_colour,
    pair_corners,
    patch_geometry,
    project_colour,
)
from cebench.pretrain.methods.rotation import four_rotations
from cebench.pretrain.train import run
from tests._train_helpers import tiny_config, write_images

NEW_METHODS = ("relative-position", "rotation", "masked-patches")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    """Images whose red channel grows to the right and green downwards, from a random start:
    where a patch lies relative to another, and which way is up, are learnable in a few steps."""
    root = tmp_path_factory.mktemp("ramps")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:36] / 36
    for i in range(16):
        u = rng.uniform(0, 0.4, 3)
        img = np.stack([xx * 0.6 + u[0], yy * 0.6 + u[1], np.full_like(xx, u[2])], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"img_{i:02d}.png")
    return root


# ----- relative position: the 8 neighbours, gaps, jitter, colour


def grid_image(patch: int, gap: int) -> torch.Tensor:
    """[1,1,S,S], S = 3 patch + 2 gap: grid cell (r, c) holds the value 3r + c, the gaps -1."""
    pitch, size = patch + gap, 3 * patch + 2 * gap
    img = torch.full((1, 1, size, size), -1.0)
    for r in range(3):
        for c in range(3):
            img[..., r * pitch : r * pitch + patch, c * pitch : c * pitch + patch] = 3 * r + c
    return img


def test_the_eight_neighbours_of_a_known_grid():
    img = grid_image(patch=4, gap=2)  # 16 px, no slack: the grid sits at (0, 0)
    labels = torch.arange(8)
    centre, other = pair_corners(labels, 16, patch=4, gap=2, jitter=0)
    index = torch.zeros(8, dtype=torch.long)
    a, b = crop_patches(img, index, centre, 4), crop_patches(img, index, other, 4)
    assert centre.tolist() == [[6, 6]] * 8
    assert torch.equal(a, torch.full((8, 1, 4, 4), 4.0))  # the centre cell, no gap pixel
    # Doersch's Fig. 2: top-left, top, top-right, left, right, bottom-left, bottom, bottom-right
    assert [int(p.unique()) for p in b] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert other.tolist() == [[0, 0], [0, 6], [0, 12], [6, 0], [6, 12], [12, 0], [12, 6], [12, 12]]


def test_jitter_and_offset_keep_patches_inside_and_apart():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (500,), generator=g)
    size, patch, gap, jitter = 40, 8, 4, 1
    centre, other = pair_corners(labels, size, patch, gap, jitter, g)
    for corner in (centre, other):
        assert corner.min() >= 0 and corner.max() <= size - patch
    step = (other - centre).float()
    dirs = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
    expected = dirs[labels].float() * (patch + gap)
    assert (step - expected).abs().max() <= 2 * jitter  # each patch moves by at most `jitter`
    assert (step - expected).abs().max() == 2 * jitter  # and the jitter is used
    gap_left = (step.abs() - patch).clamp(min=0)[dirs[labels] != 0]
    assert gap_left.min() >= gap - 2 * jitter > 0  # neighbours never touch


def test_patch_geometry_fits_the_grid_and_follows_doersch():
    assert patch_geometry(398, RelativePositionOptions(patch=96, jitter_ratio=7 / 96)) == (
        96,
        48,
        7,
    )
    for size in (32, 48, 64, 227):
        p, g, j = patch_geometry(size, RelativePositionOptions())
        assert 3 * p + 2 * g + 2 * j <= size and g == round(p / 2)
        assert 3 * (p + 1) + 2 * round((p + 1) / 2) + 2 * round((p + 1) * 0.075) > size
    with pytest.raises(ConfigError, match="method_kwargs.patch=20 .* needs 84 px"):
        patch_geometry(64, RelativePositionOptions(patch=20))


def test_colour_dropping_and_projection():
    g = torch.Generator().manual_seed(0)
    patches = torch.rand(6, 3, 5, 5, generator=g) * 2 - 1
    keep = torch.tensor([0, 1, 2, 0, 1, 2])
    noise = torch.randn(6, 3, 5, 5, generator=g)
    out = drop_colour(patches, keep, noise)
    for i, k in enumerate(keep.tolist()):
        assert torch.equal(out[i, k], patches[i, k])
        std = patches[i, k].std(unbiased=False)
        for c in {0, 1, 2} - {k}:  # Gaussian noise at 1/100 of the kept channel's std
            assert torch.allclose(out[i, c], noise[i, c] * std / 100)
    grey = torch.full((1, 3, 2, 2), 0.3)
    assert torch.allclose(project_colour(grey), grey)  # grey has no green-magenta part
    green = torch.tensor([-0.5, 1.0, -0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert project_colour(green).abs().max() < 1e-6  # pure green-magenta is removed
    mixed = project_colour(patches)
    assert (mixed * torch.tensor([-1.0, 2.0, -1.0]).view(1, 3, 1, 1)).sum(1).abs().max() < 1e-5


# ----- rotation: the 4 rotations of a known image


def test_four_rotations_of_a_known_image():
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    turned, labels = four_rotations(torch.cat([img, img + 10]))
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    by_hand = [  # counter-clockwise quarter turns
        [[1, 2], [3, 4]],
        [[2, 4], [1, 3]],
        [[4, 3], [2, 1]],
        [[3, 1], [4, 2]],
    ]
    assert turned[:4, 0].tolist() == by_hand
    assert torch.equal(turned[4:], turned[:4] + 10)  # image-major: rows 4i..4i+3 are image i
    x = torch.rand(2, 3, 5, 5)
    turned, _ = four_rotations(x)
    for k in range(4):
        assert torch.equal(turned[k::4], torch.rot90(x, k, dims=(2, 3)))


# ----- masked patches: the dropped fraction and the grid


def test_patch_mask_drops_the_fraction_on_the_grid():
    g = torch.Generator().manual_seed(0)
    hole = patch_grid_masks(16, 32, 8, 0.75, g)
    assert hole.shape == (16, 1, 32, 32) and hole.dtype == torch.bool
    assert hole.float().mean((1, 2, 3)).tolist() == [0.75] * 16  # exactly 12 of 16 patches
    cells = hole.view(16, 4, 8, 4, 8)
    assert torch.equal(cells.all(2).all(3), cells.any(2).any(3))  # each 8x8 cell all or nothing
    assert len({tuple(h.flatten().tolist()) for h in hole}) > 1  # a fresh choice per image
    again = patch_grid_masks(16, 32, 8, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(hole, again)
    counts = patch_grid_masks(2000, 16, 8, 0.5, g).view(2000, 2, 8, 2, 8)[:, :, 0, :, 0]
    assert (counts.float().mean(0) - 0.5).abs().max() < 0.05  # every cell equally likely
    with pytest.raises(ConfigError, match="patch=6 must divide model.input_size=32"):
        patch_grid_masks(1, 32, 6, 0.75)
    with pytest.raises(ConfigError, match="drops 4 of 4 patches"):
        patch_grid_masks(1, 32, 16, 0.9)


def test_masked_patches_loss_is_on_the_dropped_pixels_only(images, tmp_path):
    cfg = tiny_config(images, tmp_path / "r", ["method=masked-patches", "mask.kind=none"])
    cfg.data.fill_value, cfg.optim.lr = [0.5, 0.5, 0.5], 1e-3
    method = get_method("masked-patches")(cfg, torch.device("cpu"), DistInfo())
    before = copy.deepcopy(method.models["net"])
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    m = method.step(x, None, 0)
    hole = method.hole
    assert hole.float().mean().item() == 0.75
    with torch.no_grad():
        pred = before(fill_holes(x, hole, torch.zeros(3)))
    naive = ((pred - x) ** 2 * hole).sum() / (3 * hole.sum())
    assert m["loss"].item() == pytest.approx(naive.item(), rel=1e-5)
    assert "disc" not in method.models and "loss_adv_g" not in m


# ----- through the trainer


@pytest.mark.parametrize(
    "method,data,overrides",
    [
        ("rotation", "ramps", []),
        # colour none: on the ramps one kept channel often holds no position at all
        ("relative-position", "ramps", ["method_kwargs={all_positions: true, colour: none}"]),
        ("masked-patches", "images", []),
    ],
)
def test_loss_goes_down(request, tmp_path, method, data, overrides):
    cfg = tiny_config(
        request.getfixturevalue(data),
        tmp_path / "run",
        [f"method={method}", "mask.kind=none", "train.steps=40", "train.sample_every=20",
         "train.save_every=40", "optim.lr=0.003", *overrides],
    )  # fmt: skip
    run_dir = run(cfg)
    loss = [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(loss) == 40
    assert sum(loss[-5:]) / 5 < 0.7 * sum(loss[:5]) / 5
    assert (run_dir / "samples" / "step_000020.png").is_file()
    enc, info = load_encoder(run_dir / "encoder.pt")
    assert info["meta"]["method"] == method and info["name"] == "tiny"
    assert enc(torch.zeros(1, 3, 32, 32)).shape[1] == enc.num_features


def test_relative_position_resume_is_bit_exact(images, tmp_path):
    over = ["method=relative-position", "mask.kind=none"]
    full = run(tiny_config(images, tmp_path / "full", [*over, "train.steps=6"]))
    run(tiny_config(images, tmp_path / "part", [*over, "train.steps=3"]))
    resumed = run(
        tiny_config(images, tmp_path / "part", [*over, "train.steps=6", "train.resume=true"])
    )
    rows = [read_jsonl(d / "metrics.jsonl") for d in (full, resumed)]
    assert [(r["step"], r["loss"]) for r in rows[0]] == [(r["step"], r["loss"]) for r in rows[1]]
    a, b = (safe_load(d / "checkpoint.pt")["models"]["net"] for d in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_suite_cell_runs_each_method(tmp_path, method):
    out = tmp_path / "mini"
    rc = cebench(
        ["bench", "--suite", "mini", "--out", str(out), "--jobs", "1",
         "--set", f"arms.ce-center.method={method}", "--set", "arms.ce-center.mask=none"]
    )  # fmt: skip
    assert rc == 0
    rec = json.loads((out / "cells" / "ce-center.cls-linear.s0.json").read_text())
    assert 0 <= rec["metrics"]["score"] <= 100
    enc = torch.load(out / "runs" / "ce-center.pretrain.s0" / "encoder.pt", weights_only=True)
    assert enc["meta"]["method"] == method


def test_method_kwargs_are_checked():
    with pytest.raises(ConfigError, match="unknown config key 'method_kwargs.ratio'"):
        load_pretrain_config(
            "small-rotation", ["method=relative-position", "method_kwargs={ratio: 1}"]
        )
    with pytest.raises(ConfigError, match="method=rotation takes no method_kwargs"):
        load_pretrain_config("small-rotation", ["method_kwargs={patch: 8}"])
    with pytest.raises(ConfigError, match="method_kwargs.colour' must be one of"):
        load_pretrain_config("small-relative-position", ["method_kwargs={colour: red}"])
    with pytest.raises(ConfigError, match="needs model.predict=image"):
        check_consistency(load_pretrain_config("small-masked-patches", ["model.predict=region"]))
    for name in ("small-rotation", "small-relative-position", "small-masked-patches"):
        check_consistency(load_pretrain_config(name))


@pytest.mark.parametrize("colour", ["drop", "project", "none"])
def test_relative_position_on_constant_images_is_at_chance(images, tmp_path, colour):
    """On one constant-colour image the two patches carry no information, so no model can beat
    chance (1/8): a lookup table from the exact pair (a, b) to its most frequent label, fitted on
    30 steps of one pair per image, is scored on 10 other steps. It scored 1.0 when every label
    was 0 (`randint(0, 1)`: the pairs per image used as the number of classes)."""
    cfg = tiny_config(images, tmp_path / "c", ["method=relative-position", "mask.kind=none",
                      "train.batch_size=16", "optim.lr=0.001",
                      f"method_kwargs={{colour: {colour}}}"])  # fmt: skip
    method = get_method("relative-position")(cfg, torch.device("cpu"), DistInfo())
    flat = torch.full((16, 3, 32, 32), 0.3)

    def pairs(steps):
        for step in steps:
            a, b, labels = method.make_pairs(flat, step)
            a, b = a + 0.0, b + 0.0  # -0.0 (zero-std noise) -> 0.0, so equal pairs share bytes
            for i in range(len(labels)):
                yield (a[i].numpy().tobytes() + b[i].numpy().tobytes(), int(labels[i]))

    counts: dict[bytes, np.ndarray] = {}
    for key, label in pairs(range(30)):
        counts.setdefault(key, np.zeros(8))[label] += 1
    assert len(counts) <= 9  # only the kept channels (3 x 3 with colour dropping) tell pairs apart
    test = list(pairs(range(100, 110)))
    acc = np.mean([key in counts and counts[key].argmax() == label for key, label in test])
    assert acc < 0.25  # chance 0.125, 160 pairs: std 0.026
    labels = torch.cat([method.make_pairs(flat, s)[2] for s in range(30)])
    assert torch.bincount(labels, minlength=8).min() > 0.5 * len(labels) / 8  # all 8 are drawn


def test_relative_position_patches_and_encoder_size(images, tmp_path):
    # the paper arm: Doersch's 96 px patches, 48 px gaps, 7 px jitter in a 398 px crop
    paper = load_pretrain_config("paper-alexnet-relative-position")
    check_consistency(paper)
    opts = get_method("relative-position").options(paper)
    assert patch_geometry(paper.model.input_size, opts) == (96, 48, 7) and opts.encoder_size == 227
    # encoder.pt is written for encoder_size (the transfer size), patches stay at their own size
    cfg = tiny_config(images, tmp_path / "r", ["method=relative-position", "mask.kind=none",
                      "method_kwargs={encoder_size: 48}", "optim.lr=0.001"])  # fmt: skip
    method = get_method("relative-position")(cfg, torch.device("cpu"), DistInfo())
    assert method.encoder()[2]["input_size"] == 48 and method.patch == 7
    a, b, labels = method.make_pairs(torch.rand(4, 3, 32, 32), step=0)
    assert a.shape == b.shape == (4, 3, 7, 7) and labels.shape == (4,)
    small = tiny_config(images, tmp_path / "s", ["method=relative-position",
                        "model.encoder=alexnet", "model.encoder_kwargs={}",
                        "method_kwargs={encoder_size: 227}"])  # fmt: skip
    with pytest.raises(ConfigError, match="encoder alexnet cannot take 7 px patches"):
        get_method("relative-position")(small, torch.device("cpu"), DistInfo())


def test_inpaint_refuses_a_run_without_a_decoder(ramps, tmp_path, capsys):
    run_dir = run(tiny_config(ramps, tmp_path / "rot", ["method=rotation", "train.steps=1"]))
    rc = cebench(
        [
            "inpaint",
            "--checkpoint",
            str(run_dir),
            "--images",
            str(ramps),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "is a rotation run: it has no decoder to inpaint with" in capsys.readouterr().err
