"""The bench runner on the real parts: built-in suites resolve against the real config classes,
the two-cell miniature runs end to end (and is cached on rerun), the paper suite's dry run."""

from __future__ import annotations

import csv
import json

import pytest

from cebench.benchmarks.cells import CellExecutor, flatten_metrics
from cebench.benchmarks.runner import Runner
from cebench.benchmarks.suite import SUITES_DIR, load_suite
from cebench.cli import main as cebench
from cebench.core.errors import ConfigError


@pytest.mark.parametrize(
    "name,dry",
    [("default", False), ("default", True), ("paper", False), ("paper", True), ("mini", False)],
)
def test_builtin_suites_resolve_against_real_configs(tmp_path, name, dry):
    suite = load_suite(name, dry_run=dry)
    runner = Runner(suite, tmp_path, CellExecutor(), log=lambda m: None)
    runner.resolve_all()  # every cell's config built as PretrainConfig / <Task>Config / inpaint args
    assert len(runner.hashes) == len(runner.cells) == len(set(runner.hashes.values()))
    if name == "default" and dry:  # one seed, every arm and task, tiny data
        assert len(runner.cells) == 7 + 4 + 45
        assert runner.resolved["ce-region.pretrain.s0"]["train"]["steps"] == 2
    if name == "default" and not dry:
        kinds = {c.kind for c in runner.cells}
        assert kinds == {"pretrain", "inpaint", "transfer"} and len(runner.cells) == 21 + 12 + 135
        cfg = runner.resolved["ce-region.pretrain.s2"]
        assert cfg["mask"]["kind"] == "random-region" and cfg["train"]["seed"] == 2
        assert cfg["monitor"]["data"].endswith("imagefolder/val") and cfg["monitor"]["every"] == 200
        assert runner.resolved["random.detection.s1"]["encoder"] == "random:tiny,width=16,depth=5"
        # the random baselines are the same architecture as every pretrained encoder
        for arm in ("supervised", "autoencoder", "ce-center", "ce-block", "ce-region"):
            model = runner.resolved[f"{arm}.pretrain.s0"]["model"]
            assert model["encoder"] == "tiny"
            assert model["encoder_kwargs"] == {"width": 16, "depth": 5}


def test_flatten_metrics_per_layer():
    flat = flatten_metrics(
        {
            "score": 40.0,
            "mAP": 40.0,
            "per_class_AP": [1.0],
            "layer": "conv3",
            "cache_hits": {"train": True},
            "ok": True,
            "per_layer": {"conv1": {"mAP": 30.0, "per_class_AP": [1.0]}, "conv2": {"top1": 50}},
        }
    )
    assert flat == {
        "score": 40.0,
        "mAP": 40.0,
        "mAP@conv1": 30.0,
        "score@conv1": 30.0,
        "top1@conv2": 50.0,
        "score@conv2": 50.0,
    }


def test_mini_suite_end_to_end(tmp_path, capsys):
    out = tmp_path / "mini"
    assert cebench(["bench", "--suite", "mini", "--out", str(out)]) == 0
    cells = {p.name for p in (out / "cells").iterdir()}
    assert cells == {"ce-center.pretrain.s0.json", "ce-center.cls-linear.s0.json"}
    rec = json.loads((out / "cells" / "ce-center.cls-linear.s0.json").read_text())
    harness = json.loads((out / "runs" / "ce-center.cls-linear.s0" / "metrics.json").read_text())
    assert rec["metrics"]["score"] == pytest.approx(harness["metrics"]["score"])
    assert {"score@conv1", "score@conv2", "score@conv3"} <= set(rec["metrics"])
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    score = next(r for r in rows if r["task"] == "cls-linear" and r["metric"] == "score")
    assert float(score["value"]) == pytest.approx(harness["metrics"]["score"])
    assert score["config_hash"] == rec["config_hash"] and score["device"].startswith("cpu")
    md = (out / "table.md").read_text()
    assert f"**{harness['metrics']['score']:.1f}**" in md
    for fig in (
        "bar_cls-linear.png",
        "per_layer_cls-linear.png",
        "pretrain_loss.png",
        "pretrain_probe.png",
        "inpaint_ce-center.png",
    ):
        assert (out / "figures" / fig).stat().st_size > 1000
    capsys.readouterr()
    assert cebench(["bench", "--suite", "mini", "--out", str(out)]) == 0
    assert "0 ran, 2 cached, 0 failed" in capsys.readouterr().err
    # --list with --rerun: the cells that would run again (the probe reads the new encoder)
    assert cebench(["bench", "--suite", "mini", "--out", str(out), "--list",
                    "--rerun", "ce-center.pretrain.s0"]) == 0  # fmt: skip
    states = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert states == ["rerun", "rerun"]
    assert len(list((out / "cells").glob("*.s0.json"))) == 2  # --list removes nothing


def test_default_suite_dry_run_runs_every_cell(tmp_path):
    """Every arm (rotation and masked patches included) x every task once, tiny data: 56 cells."""
    out = tmp_path / "dry"
    assert cebench(["bench", "--suite", "default", "--dry-run", "--out", str(out)]) == 0
    cells = list((out / "cells").glob("*.json"))
    assert len(cells) == 7 + 4 + 45 and not list((out / "cells").glob("*.error.json"))
    md = (out / "table.md").read_text()
    for label in (
        "Rotation (Gidaris et al.)",
        "Masked patches (MAE-style)",
        "Context encoder (centre)",
    ):
        assert f"| {label} |" in md


@pytest.mark.slow
def test_paper_suite_dry_run(tmp_path):
    """Every paper cell (AlexNet at 227 px) for a couple of steps on tiny generated VOC/ImageFolder data."""
    out = tmp_path / "paper"
    assert cebench(["bench", "--suite", "paper", "--dry-run", "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert "| Context encoder (random region) |" in md and "56.5" in md and "14 hours" in md
    # 8 pretraining cells, 6 inpainting cells, 4 tasks x 10 arms (the inpainting net has none)
    assert len(list((out / "cells").glob("*.json"))) == 8 + 6 + 4 * 10
    assert "| Context encoder (L2 + adversarial) | paper | 9.37 | 1.96 | 18.58 |" in md


def test_dry_run_needs_a_dry_run_section(tmp_path):
    """A suite without one would run at full size under --dry-run: refused, naming the suite."""
    suite = tmp_path / "nodry.yaml"
    text = (SUITES_DIR / "mini.yaml").read_text().replace("dry_run: {}", "")
    suite.write_text(text.replace("name: mini", "name: nodry"))
    with pytest.raises(ConfigError, match="suite 'nodry' has no dry_run section"):
        load_suite(suite, dry_run=True)
    assert len(load_suite("mini", dry_run=True).arms) == 1  # mini: already minimal


@pytest.mark.parametrize("key", ["pretrain.train.out", "transfer.out"])
def test_suite_configs_cannot_write_outside_the_results_dir(tmp_path, key):
    from cebench.core.errors import ConfigError

    suite = load_suite("mini", [f"{key}={tmp_path.parent / 'escaped'}"])
    executor = CellExecutor()
    executor.out_dir = (tmp_path / "out").resolve()  # what prepare() records
    runner = Runner(suite, tmp_path / "out", executor, log=lambda m: None)
    with pytest.raises(ConfigError, match="would write outside the results directory"):
        runner.resolve_all()
