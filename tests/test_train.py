"""Pretraining loop: loss goes down, exact resume, checkpoint fallbacks, NaN stop, config errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cebench.core.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.pretrain.config import load_pretrain_config, named_configs
from cebench.pretrain.encoder_file import load_encoder
from cebench.pretrain.train import run
from tests._train_helpers import tiny_config, write_images

LOSS_KEYS = ("loss", "loss_rec", "loss_adv_g", "loss_d")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"), n=16)


def losses(run_dir):
    return [
        {k: r[k] for k in LOSS_KEYS if k in r} | {"step": r["step"]}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


def weights(run_dir, name="checkpoint.pt"):
    return safe_load(run_dir / name)["models"]


def assert_same_weights(a, b):
    for part in a:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


@pytest.mark.parametrize(
    "method,mask",
    [
        ("context-encoder", "center"),
        ("context-encoder", "random-block"),
        ("context-encoder", "random-region"),
        ("autoencoder", "none"),
    ],
)
def test_loss_goes_down(images, tmp_path, method, mask):
    cfg = tiny_config(
        images,
        tmp_path / "run",
        [
            f"method={method}",
            f"mask.kind={mask}",
            "train.steps=40",
            "train.sample_every=20",
            "train.save_every=40",
            "optim.lr=0.003",
        ],
    )
    run_dir = run(cfg)
    rec = [r["loss_rec"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(rec) == 40
    # random regions: the paper's loss covers only the dropped pixels (none the encoder sees), so
    # it falls more slowly than the losses that include the visible overlap band
    drop = 0.8 if mask == "random-region" else 0.7
    assert sum(rec[-5:]) / 5 < drop * sum(rec[:5]) / 5
    for name in (
        "checkpoint.pt",
        "config.yaml",
        "encoder.pt",
        "summary.json",
        "samples/step_000020.png",
    ):
        assert (run_dir / name).is_file(), name
    enc, info = load_encoder(run_dir / "encoder.pt")
    assert info["meta"]["method"] == method and info["meta"]["mask"] == mask
    assert enc(torch.zeros(1, 3, 32, 32)).shape[1] == enc.num_features
    # the discriminator is built and stepped only under the joint loss
    assert ("disc" in weights(run_dir)) == (method == "context-encoder")


def test_l2_only_builds_no_discriminator(images, tmp_path):
    run_dir = run(
        tiny_config(
            images, tmp_path / "r", ["loss.lambda_adv=0", "loss.lambda_rec=1", "train.steps=2"]
        )
    )
    assert "disc" not in weights(run_dir)
    assert "loss_d" not in read_jsonl(run_dir / "metrics.jsonl")[-1]
    saved = safe_load(run_dir / "checkpoint.pt")["config"]
    assert saved["optim"]["lr"] == pytest.approx(2e-4)  # the released rule, written into the config
    assert saved["data"]["fill"] == "dataset" and len(saved["data"]["fill_value"]) == 3
    assert "fill_value" in (run_dir / "config.yaml").read_text()


def test_supervised_loss_goes_down(tmp_path):
    data = write_images(tmp_path / "folder", n=24, classes=3)
    cfg = tiny_config(
        data,
        tmp_path / "sup",
        [
            "method=supervised",
            "train.steps=40",
            "optim.lr=0.005",
            "train.batch_size=12",
            "train.sample_every=0",
        ],
    )
    run_dir = run(cfg)
    loss = [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert sum(loss[-8:]) / 8 < 0.5 * sum(loss[:8]) / 8
    enc, info = load_encoder(run_dir / "encoder.pt")
    assert info["meta"]["method"] == "supervised" and info["meta"]["classes"] == ["c0", "c1", "c2"]


def test_resume_is_bit_exact(images, tmp_path):
    full = run(tiny_config(images, tmp_path / "full", ["train.steps=6"]))
    part = tiny_config(images, tmp_path / "part", ["train.steps=3"])
    run(part)
    # resume as the command line does: only --out, --resume and a longer --steps (config.yaml is the base)
    from cebench.pretrain.train import build_config, get_args_parser

    args = get_args_parser().parse_args(
        ["--out", str(tmp_path / "part"), "--resume", "--steps", "6"]
    )
    resumed = run(build_config(args))
    assert losses(resumed) == losses(full)
    assert [r["step"] for r in losses(resumed)] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(weights(resumed), weights(full))
    assert safe_load(resumed / "checkpoint.prev.pt")["step"] == 3


def test_existing_run_needs_resume(images, tmp_path):
    run(tiny_config(images, tmp_path / "r", ["train.steps=1"]))
    with pytest.raises(ConfigError, match="already holds a training run.*--resume"):
        run(tiny_config(images, tmp_path / "r", ["train.steps=2"]))


def test_corrupt_newest_checkpoint_falls_back_to_previous(images, tmp_path, capsys):
    full = run(tiny_config(images, tmp_path / "full"))
    run_dir = run(tiny_config(images, tmp_path / "r"))  # checkpoints at steps 3 (prev) and 6
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    resumed = run(tiny_config(images, run_dir, ["train.resume=true"]))
    err = capsys.readouterr().err
    assert "checkpoint.pt is corrupt" in err and "checkpoint.prev.pt (step 3)" in err
    assert losses(resumed) == losses(full)
    assert_same_weights(weights(resumed), weights(full))


def test_failed_checkpoint_write_keeps_previous(images, tmp_path, monkeypatch):
    import cebench.core.checkpoints as resume

    real, calls = resume.atomic_save, []

    def failing(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise CheckpointError(f"could not write checkpoint {path}: No space left on device")
        real(obj, path)

    monkeypatch.setattr(resume, "atomic_save", failing)
    with pytest.raises(
        CheckpointError, match=r"No space left.*stopped at step 6.*step 3\) is intact"
    ):
        run(tiny_config(images, tmp_path / "r"))
    assert safe_load(tmp_path / "r" / "checkpoint.pt")["step"] == 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(images, tmp_path, monkeypatch):
    import cebench.pretrain.methods.context_encoder as engine

    real, calls = engine.reconstruction_loss, []

    def nan_after_four(pred, target, weights):
        calls.append(1)
        out = real(pred, target, weights)
        return out * float("nan") if len(calls) >= 5 else out

    monkeypatch.setattr(engine, "reconstruction_loss", nan_after_four)
    with pytest.raises(TrainingError, match=r"loss_rec became nan at step 5.*step 3\) is kept"):
        run(tiny_config(images, tmp_path / "r"))
    ckpt = safe_load(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["step"] == 3
    assert all(
        torch.isfinite(v).all() for v in ckpt["models"]["net"].values() if v.is_floating_point()
    )


def test_bad_image_named_or_skipped(tmp_path):
    data = write_images(tmp_path / "imgs", n=8)
    (data / "img_003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cfg = tiny_config(
        data, tmp_path / "a", ["data.workers=1", "train.steps=4", "data.fill=released"]
    )
    with pytest.raises(DatasetError, match="img_003.png: cannot read image") as e:
        run(cfg)
    assert "\n" not in str(e.value)
    run_dir = run(tiny_config(data, tmp_path / "b", ["data.skip_bad_images=true", "train.steps=4"]))
    assert read_jsonl(run_dir / "metrics.jsonl")[-1]["skipped_images"] >= 1


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.stepz=3", "unknown config key 'train.stepz'"),
        ("train.steps=abc", "'train.steps' must be int"),
        ("model.input_size=-32", "input_size must be >= 8"),
        ("mask.coverage=1.5", r"coverage must be in \(0, 1\]"),
        ("train.batch_size=0", "batch_size must be >= 1"),
        ("mask.kind=diamond", "must be one of"),
        ("model_preset=huge", "unknown model_preset 'huge'"),
        ("loss.region_weighting=edges", r"loss.region_weighting must be one of \['paper'"),
    ],
)
def test_config_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_pretrain_config("small", [override])


def test_named_configs_load():
    assert {"paper-inpainting", "paper-alexnet", "paper-alexnet-poolfree", "small"} <= set(
        named_configs()
    )
    for name in named_configs():
        cfg = load_pretrain_config(name)
        assert cfg.model_preset in name or name.startswith("small")
    paper = load_pretrain_config("paper-inpainting")
    assert (
        paper.model.input_size,
        paper.model.output_size,
        paper.mask.region,
        paper.mask.overlap,
    ) == (128, 64, 64, 4)
    assert paper.resolved_lr() == pytest.approx(2e-3) and paper.optim.beta1 == 0.5
    # paper Sec. 5.2: constant lr 1e-4 (random regions), 1e-3 (centre)
    assert load_pretrain_config("paper-alexnet").resolved_lr() == pytest.approx(1e-4)
    assert load_pretrain_config("paper-alexnet-center").resolved_lr() == pytest.approx(1e-3)


def test_random_region_shapes_from_voc_masks(images, tmp_path, capsys):
    voc = tmp_path / "VOC"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    yy, xx = np.mgrid[0:40, 0:40]
    for name, (cy, cx) in {"a": (15, 20), "b": (25, 12)}.items():
        Image.new("RGB", (40, 40)).save(voc / "JPEGImages" / f"{name}.jpg")
        label = (((yy - cy) / 12) ** 2 + ((xx - cx) / 6) ** 2 < 1).astype(
            np.uint8
        )  # class 1 ellipse
        Image.fromarray(label, mode="L").save(voc / "SegmentationClass" / f"{name}.png")
    cfg = tiny_config(
        images, tmp_path / "r", ["mask.kind=random-region", f"mask.shapes={voc}", "train.steps=2"]
    )
    run(cfg)
    assert "random-region shapes: 2 objects from 2 masks" in capsys.readouterr().err


def test_cli_picks_the_config_from_the_image_size(tmp_path, capsys):
    from cebench.pretrain.train import build_config, get_args_parser

    small = write_images(tmp_path / "small", n=2, size=64)
    big = write_images(tmp_path / "big", n=2, size=160)
    parse = get_args_parser().parse_args
    cfg = build_config(
        parse(
            ["--data", str(small), "--out", str(tmp_path / "o"), "--steps", "7", "optim.lr_d=1e-4"]
        )
    )
    assert "config: small (chosen" in capsys.readouterr().err
    assert (cfg.model_preset, cfg.train.steps, cfg.optim.lr_d, cfg.data.path) == (
        "small-tiny",
        7,
        1e-4,
        str(small),
    )
    cfg = build_config(
        parse(["--data", str(big), "--out", str(tmp_path / "o"), "--mask", "center"])
    )
    assert cfg.model_preset == "paper-inpainting" and cfg.mask.kind == "center"
    cfg = build_config(
        parse(["--data", str(big), "--out", str(tmp_path / "o"), "--mask", "random-region"])
    )
    assert cfg.model_preset == "paper-alexnet" and cfg.mask.kind == "random-region"
    cfg = build_config(
        parse(["--data", str(small), "--out", str(tmp_path / "o"), "--method", "autoencoder"])
    )
    assert (cfg.method, cfg.mask.kind) == ("autoencoder", "none")
    with pytest.raises(ConfigError, match="autoencoder reconstructs the whole image"):
        build_config(
            parse(
                ["--data", str(small), "--out", "o", "--method", "autoencoder", "--mask", "center"]
            )
        )
    with pytest.raises(ConfigError, match="model.predict=region predicts the centre region"):
        run(
            build_config(
                parse(
                    [
                        "--data",
                        str(big),
                        "--out",
                        str(tmp_path / "p"),
                        "--config",
                        "paper-inpainting",
                        "--mask",
                        "random-block",
                    ]
                )
            )
        )


def test_bf16_autocast_and_channels_last_run(images, tmp_path):
    cfg = tiny_config(
        images, tmp_path / "r", ["train.amp=bf16", "train.channels_last=true", "train.steps=2"]
    )
    run_dir = run(cfg)
    assert json.loads((run_dir / "summary.json").read_text())["amp"] == "bf16"
    assert all(math.isfinite(r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl"))


def test_run_shorter_than_sample_every_writes_a_final_grid(images, tmp_path):
    # 5 steps with sample_every=20: no multiple of 20 is reached, the last step writes one anyway;
    # sample_every=0 still means no grid at all
    run_dir = run(
        tiny_config(images, tmp_path / "short", ["train.steps=5", "train.sample_every=20"])
    )
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000005.png"]
    off = run(tiny_config(images, tmp_path / "off", ["train.steps=5", "train.sample_every=0"]))
    assert not (off / "samples").exists()


def test_config_is_resolved_before_the_trainer(images, tmp_path):
    """resolve_run finishes the config (resume's saved config, lr, the images and the fill value
    they decide) before anything is built; the caller's config is never changed and the Trainer
    trains a copy of the plan's config."""
    import copy

    from cebench.core.distributed import DistInfo
    from cebench.pretrain.trainer import Trainer, resolve_run

    cfg = tiny_config(images, tmp_path / "r", ["loss.lambda_adv=0", "loss.lambda_rec=1"])
    before = copy.deepcopy(cfg)
    plan = resolve_run(cfg, DistInfo())
    assert plan.state is None and plan.cfg.optim.lr == cfg.optim.lr_d  # L2 only: lr = lr_d
    assert plan.notes == (
        f"optim.lr = {cfg.optim.lr_d:g} (the context-encoder default; set optim.lr to change it)",
        f"image folder {images}: 16 images",
    )
    assert len(plan.data.paths) == 16 and plan.data.labels is None
    # fill: dataset -> the images' mean, decided here (a naive mean of the same files agrees)
    assert cfg.data.fill == "dataset" and cfg.data.fill_value is None
    from cebench.pretrain.train_data import dataset_mean

    want = dataset_mean(list(plan.data.paths), cfg.data.fill_samples, cfg.data.load_size, False)
    assert plan.cfg.data.fill_value == want and all(0 < v < 1 for v in want)
    assert cfg == before and cfg.optim.lr is None
    run(cfg)
    # resume with another lambda_rec and more steps: the plan holds the checkpoint's config
    # (lr as it ran, lambda_rec as saved) with only the runtime keys taken from the new one
    again = tiny_config(
        images, tmp_path / "r", ["loss.lambda_rec=0.5", "train.steps=9", "train.resume=true"]
    )
    plan = resolve_run(again, DistInfo())
    assert plan.state is not None and plan.state["step"] == 6
    assert plan.cfg.loss.lambda_rec == 1.0 and plan.cfg.loss.lambda_adv == 0.0
    assert plan.cfg.train.steps == 9 and plan.cfg.optim.lr == cfg.optim.lr_d
    assert plan.notes == (f"image folder {images}: 16 images",)
    with pytest.raises(TypeError, match="Trainer takes resolve_run's RunPlan"):
        Trainer(again, torch.device("cpu"), DistInfo())  # no second way to resolve a config
    trainer = Trainer(plan, torch.device("cpu"), DistInfo())
    assert trainer.cfg == plan.cfg and trainer.cfg is not plan.cfg and trainer.start_step == 6
    # resumed: the fill value saved with the run, not computed again
    assert plan.cfg.data.fill_value == want
    trainer.cfg.data.fill_value[0] = 0.0  # the Trainer's copy: the plan is not touched
    assert plan.cfg.data.fill_value == want


def test_resume_says_when_the_training_images_changed(tmp_path, capsys):
    """The checkpoint keeps the image count and a digest of the list (relative to data.path):
    a resumed run over the same folder says nothing, over one with an image more (or the same
    count, another file) it says so, with the counts and the step; a moved folder is the same."""
    import shutil

    from tests._train_helpers import write_images

    data = write_images(tmp_path / "imgs", n=8)
    run(tiny_config(data, tmp_path / "r", ["train.steps=2"]))
    assert safe_load(tmp_path / "r" / "checkpoint.pt")["images"]["count"] == 8

    def resume(folder, steps):
        capsys.readouterr()
        run(tiny_config(folder, tmp_path / "r", [f"train.steps={steps}", "train.resume=true"]))
        return capsys.readouterr().err

    assert "not the ones this run started with" not in resume(data, 3)
    moved = tmp_path / "moved"
    shutil.move(str(data), moved)  # the same images elsewhere: the same list
    assert "not the ones this run started with" not in resume(moved, 4)
    write_images(tmp_path / "extra", n=1, seed=5)
    shutil.copy(tmp_path / "extra" / "img_000.png", moved / "new.png")
    err = resume(moved, 5)
    assert f"the training images under {moved} are not the ones this run started with" in err
    assert "(8 -> 9 images, or other files): from step 4 on" in err
    (moved / "new.png").rename(moved / "zz.png")  # same count, another list than step 5's
    assert "(9 -> 9 images, or other files): from step 5 on" in resume(moved, 6)
