"""`cebench inpaint`: hand-computed metrics, same masks for every method, baselines and the model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from cebench.pretrain.inpaint import (
    get_args_parser,
    image_masks,
    inpaint_metrics,
    main,
    psnr,
    summarise,
)
from cebench.pretrain.train import run
from tests._train_helpers import tiny_config, write_images


def test_metrics_by_hand():
    truth = np.zeros((4, 4, 3), np.uint8)
    result = truth.copy()
    hole = np.zeros((4, 4), bool)
    hole[1:3, 1:3] = True  # 4 pixels x 3 channels
    result[1, 1] = (255, 255, 255)  # error 1.0 in 3 of the 12 values
    result[2, 2, 0] = 51  # error 0.2 in 1 value
    result[0, 0] = 255  # outside the hole: ignored
    m = inpaint_metrics(result, truth, hole)
    assert m["l1"] == pytest.approx((3 * 1.0 + 0.2) / 12)
    assert m["l2"] == pytest.approx((3 * 1.0 + 0.04) / 12)
    s = summarise([{"l1": 0.1, "l2": 0.01}, {"l1": 0.3, "l2": 0.04}])
    assert s["l1"] == pytest.approx(0.2) and s["l2_percent"] == pytest.approx(2.5)
    assert s["psnr_db"] == pytest.approx(10 * math.log10(1 / 0.025))
    assert s["psnr_mean_per_image_db"] == pytest.approx((20 + 10 * math.log10(25)) / 2)
    assert psnr(0.01) == pytest.approx(20.0)


def test_masks_depend_only_on_seed_and_index():
    a = image_masks("random-block", 3, 32, region=16, overlap=2, coverage=0.25, seed=5)
    b = image_masks("random-block", 5, 32, region=16, overlap=2, coverage=0.25, seed=5)
    assert np.array_equal(a, b[:3]) and a.any()
    assert not np.array_equal(
        a, image_masks("random-block", 3, 32, region=16, overlap=2, coverage=0.25, seed=6)
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("inp")
    images = write_images(root / "imgs", n=8, size=40)
    cfg = tiny_config(
        images,
        root / "run",
        [
            "mask.kind=center",
            "mask.region=16",
            "mask.overlap=2",
            "train.steps=4",
            "train.sample_every=0",
        ],
    )
    return run(cfg), images


@pytest.mark.parametrize("method", ["model", "mean-fill", "telea", "ns"])
def test_inpaint_methods(trained, tmp_path, method):
    run_dir, images = trained
    args = get_args_parser().parse_args(
        [
            "--checkpoint",
            str(run_dir),
            "--images",
            str(images),
            "--out",
            str(tmp_path / method),
            "--method",
            method,
        ]
    )
    assert main(args) == 0
    report = json.loads((tmp_path / method / "metrics.json").read_text())
    assert report["images"] == 8 and report["mask"] == "center" and report["size"] == 32
    assert 0 < report["l2"] < report["l1"] < 1 and report["l1_percent"] == pytest.approx(
        100 * report["l1"]
    )
    # 32 px centre mask, region 16, overlap 2: the hole is rows/cols 10..21; outside it, the input
    out = np.asarray(Image.open(tmp_path / method / "img_000.png"))
    src = np.asarray(Image.open(images / "img_000.png").resize((32, 32), Image.BICUBIC))
    hole = np.zeros((32, 32), bool)
    hole[10:22, 10:22] = True
    assert np.array_equal(out[~hole], src[~hole])
    if method == "model":  # the second reading: whole centre region of the raw prediction
        assert 0 < report["region_raw_l2"] < report["region_raw_l1"] < 1
        assert report["region_raw_l2_pm1"] == pytest.approx(4 * report["region_raw_l2"])
        assert "region_raw_l1" in report["per_image"][0]
    else:
        assert not any(k.startswith("region_raw") for k in report)
    if method == "mean-fill":
        fill = np.round(np.asarray(report["fill"]) * 255)
        assert np.array_equal(out[hole], np.broadcast_to(fill, out[hole].shape))
    # the metrics are those of the written files
    m = inpaint_metrics(out, src, hole)
    assert report["per_image"][0]["l1"] == pytest.approx(m["l1"])


def test_model_needs_a_training_checkpoint(trained, tmp_path):
    from cebench.core.errors import CheckpointError

    run_dir, images = trained
    args = get_args_parser().parse_args(
        [
            "--checkpoint",
            str(run_dir / "encoder.pt"),
            "--images",
            str(images),
            "--out",
            str(tmp_path),
        ]
    )
    with pytest.raises(CheckpointError, match="encoder.pt holds only the encoder"):
        main(args)


def test_region_predicting_model(tmp_path):
    """The released inpainting layout: the net predicts only the centre region (16 of 32 px)."""
    images = write_images(tmp_path / "imgs", n=8, size=32)
    over = [
        "mask.kind=center",
        "mask.region=16",
        "mask.overlap=2",
        "model.predict=region",
        "model.output_size=16",
        "train.steps=3",
        "train.sample_every=3",
    ]
    run_dir = run(tiny_config(images, tmp_path / "run", over))
    assert (run_dir / "samples" / "step_000003.png").is_file()
    args = get_args_parser().parse_args(
        [
            "--checkpoint",
            str(run_dir / "checkpoint.pt"),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert main(args) == 0
    out = np.asarray(Image.open(tmp_path / "o" / "img_000.png"))
    src = np.asarray(Image.open(images / "img_000.png"))
    hole = np.zeros((32, 32), bool)
    hole[10:22, 10:22] = True
    assert np.array_equal(out[~hole], src[~hole]) and not np.array_equal(out[hole], src[hole])
    with pytest.raises(Exception, match="predicts the 16 px centre region only"):
        main(
            get_args_parser().parse_args(
                [
                    "--checkpoint",
                    str(run_dir),
                    "--images",
                    str(images),
                    "--out",
                    str(tmp_path / "p"),
                    "--mask",
                    "random-block",
                ]
            )
        )


def test_output_names_unique_across_subfolders(tmp_path):
    from cebench.pretrain.inpaint import output_names

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "y.png"]
    for p in paths:
        p.touch()
    assert output_names(paths, tmp_path) == ["a__x.png", "b__x.png", "y.png"]
    assert output_names([paths[0]], paths[0]) == ["x.png"]
