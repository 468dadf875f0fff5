"""The `paper` suite resolves to the paper's settings (Sec. 5.2, Tables 1-2); nothing is trained.

Every cell of `cebench bench --suite paper` is resolved as `--list` does, and its one-line
settings (`cell_settings`) are checked against the paper (PAPER.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cebench.benchmarks.cells import CellExecutor, cell_settings
from cebench.benchmarks.runner import Runner
from cebench.benchmarks.suite import load_suite, plan_cells, suite_meta
from cebench.core.errors import CheckpointError, ConfigError

ALEXNET_ARMS = ("autoencoder", "ce-center", "ce-block", "ce-region", "ce-region-poolfree")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    suite = load_suite("paper")
    runner = Runner(suite, out, CellExecutor(), log=lambda m: None)
    runner.resolve_all()
    settings = {
        c.id: dict(kv.split("=", 1) for kv in cell_settings(c, runner.resolved[c.id], out).split())
        for c in runner.cells
    }
    return suite, runner, settings, out


def test_pretraining_follows_sec_5_2(paper):
    suite, runner, s, out = paper
    voc2012 = str(Path("data/VOCdevkit/VOC2012").resolve())
    for arm in ALEXNET_ARMS:
        p = s[f"{arm}.pretrain.s0"]
        assert p["encoder"] == ("alexnet-poolfree" if arm.endswith("poolfree") else "alexnet")
        assert (p["size"], p["fc_dropout"], p["init"]) == ("227", "0.5", "dcgan")
        assert (p["rec"], p["adv"]) == ("1.0", "0.0")  # reconstruction loss only
        assert (p["steps"], p["batch"]) == ("100000", "64")
        assert p["lr"] == ("0.001" if arm == "ce-center" else "0.0001")
    assert s["ce-center.pretrain.s0"]["mask"] == "center"
    # the paper's shape bank for random regions: VOC 2012 segmentation masks
    for arm in ("ce-region", "ce-region-poolfree"):
        assert s[f"{arm}.pretrain.s0"]["mask"] == "random-region"
        assert s[f"{arm}.pretrain.s0"]["shapes"] == voc2012
    assert "shapes" not in s["ce-block.pretrain.s0"]
    # the inpainting network of Table 1: released net, joint loss, lr 10x lr_d
    inp = s["ce-inpainting.pretrain.s0"]
    assert (inp["model"], inp["size"], inp["adv"], inp["lr"], inp["steps"]) == (
        "paper-inpainting",
        "128",
        "0.001",
        "0.002",
        "116000",
    )
    assert inp["data"].endswith("paris/train")


def test_arms_encoders_and_rescaling(paper):
    suite, runner, s, out = paper
    ids = {c.id for c in runner.cells}
    # no pretraining for the Gaussian and the torchvision rows; no transfer for the inpainting net
    assert not {"random.pretrain.s0", "imagenet.pretrain.s0"} & ids
    assert not any(
        i.startswith("ce-inpainting.") and "pretrain" not in i and "inpaint" not in i for i in ids
    )
    assert s["imagenet.cls-finetune.s0"]["encoder"] == "hub:torchvision/alexnet"
    assert s["random.cls-finetune.s0"]["encoder"] == "random:alexnet"
    for task in ("cls-finetune", "detection", "segmentation"):
        # Table 2's footnote: rescaled random and self-supervised rows, not the supervised ones
        for arm in ("random-rescaled", *ALEXNET_ARMS):
            assert s[f"{arm}.{task}.s0"]["rescale"] == "full", (arm, task)
        for arm in ("random", "imagenet", "supervised"):
            assert s[f"{arm}.{task}.s0"]["rescale"] == "none", (arm, task)
    labels = {a["name"]: a for a in suite_meta(suite)["arms"]}
    assert labels["imagenet"]["label"] == "ImageNet (supervised, torchvision AlexNet)"
    assert labels["imagenet"]["paper"] == {
        "cls-finetune": 78.2,
        "detection": 56.8,
        "segmentation": 48.0,
    }
    assert labels["supervised"]["paper"] == {}  # the suite's own supervised arm: no paper row
    assert labels["ce-region"]["paper"]["cls-finetune"] == 56.5
    assert "pool-free" in labels["ce-region-poolfree"]["label"]


def test_transfer_tasks_use_the_paper_presets(paper):
    suite, runner, s, out = paper
    cls, det, seg = (s[f"ce-region.{t}.s0"] for t in ("cls-finetune", "detection", "segmentation"))
    assert cls["preset"] == det["preset"] == seg["preset"] == "paper"
    for t in (cls, det):
        assert (t["train"], t["test"], t["ap"]) == ("trainval", "test", "voc07")
    assert (cls["head"], cls["fc_dims"], cls["test_crops"], cls["random_crop"]) == (
        "fc",
        "4096",
        "10",
        "True",
    )
    assert (det["head"], det["min_size"], det["max_size"]) == ("c4", "600", "1000")
    assert (seg["fc_dims"], seg["skips"], seg["eval_size"]) == ("4096", "0", "original")


def test_dry_run_resolves_every_cell_small(tmp_path):
    suite = load_suite("paper", dry_run=True)
    runner = Runner(suite, tmp_path, CellExecutor(), log=lambda m: None)
    runner.resolve_all()
    det = cell_settings(
        runner.by_id["ce-region.detection.s0"], runner.resolved["ce-region.detection.s0"], tmp_path
    )
    assert "min_size=64" in det and "train=train" in det and "epochs=1" in det
    pre = cell_settings(
        runner.by_id["ce-region.pretrain.s0"], runner.resolved["ce-region.pretrain.s0"], tmp_path
    )
    assert "steps=2" in pre and "shapes=OUT/data/synth/VOC" in pre


def test_task_preset_is_the_base_of_the_task_config(tmp_path):
    from cebench.transfer.tasks import preset_config

    suite = load_suite("mini", ["tasks.cls-linear.preset=small"])
    cell = next(c for c in plan_cells(suite, tmp_path) if c.kind == "transfer")
    resolved = CellExecutor().resolve(cell)
    assert cell.preset == "small"
    # keys the task does not set come from small_preset(), the task's keys win over it
    assert (
        resolved["probe_batch_size"] == preset_config("classify", "small").probe_batch_size != 256
    )
    assert resolved["probe_dims"] == 256 != preset_config("classify", "small").probe_dims
    plain = next(c for c in plan_cells(load_suite("mini"), tmp_path) if c.kind == "transfer")
    assert CellExecutor().resolve(plain)["probe_batch_size"] == 256  # ClassifyConfig() default
    with pytest.raises(ConfigError, match="preset"):
        load_suite("mini", ["tasks.cls-linear.preset=huge"])


def test_hub_encoder_missing_from_the_cache_names_the_arm(paper, tmp_path, monkeypatch):
    suite, runner, s, out = paper
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    cell = runner.by_id["imagenet.cls-finetune.s0"]
    with pytest.raises(
        CheckpointError, match=r"arm 'imagenet' uses hub:torchvision/alexnet.*cache"
    ):
        CellExecutor().run(cell, runner.resolved[cell.id], tmp_path)


def test_inpainting_table_prints_table_1_beside_both_readings():
    from cebench.benchmarks.tables import render_markdown

    meta = suite_meta(load_suite("paper"))
    meta["command"] = ""
    rows = []
    for metric, value in {
        "l1_percent": 12.0,
        "l2_percent": 3.0,
        "psnr_mean_per_image_db": 16.0,
        "region_raw_l1_percent": 10.5,
        "region_raw_l2_percent": 2.5,
        "region_raw_psnr_mean_per_image_db": 17.25,
    }.items():
        rows.append(
            {"arm": "ce-inpainting", "task": "inpaint", "metric": metric, "seed": 0, "value": value}
        )
    md = render_markdown(rows, meta)
    assert "| Context encoder (L2 + adversarial) | paper | 9.37 | 1.96 | 18.58 |" in md
    assert "| NN-inpainting (HOG + LAB) | paper | 19.92 | 6.92 | 12.79 |" in md
    label = "Context encoder (inpainting net, Paris, L2 + adversarial)"
    assert f"| {label} | hole, composited | 12.00 | 3.00 | 16.00 |" in md
    assert f"| {label} | whole region, raw | 10.50 | 2.50 | 17.25 |" in md


def test_relative_position_row(paper):
    """Table 2's Doersch et al. row: its own pretraining at the paper's patch sizes, the paper's
    numbers beside it, rescaled before fine-tuning like the other self-supervised rows."""
    suite, runner, s, out = paper
    arm = suite.arm("relative-position")
    assert arm.paper == {"cls-finetune": 55.3, "detection": 46.6}
    cfg = runner.resolved["relative-position.pretrain.s0"]
    assert cfg["method"] == "relative-position" and cfg["model"]["encoder"] == "alexnet"
    assert s["relative-position.cls-finetune.s0"]["rescale"] == "full"
