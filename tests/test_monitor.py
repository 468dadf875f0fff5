"""The online kNN probe of `cebench pretrain` (cebench.pretrain.monitor)."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import tiny_config, write_images
from torch import nn

from cebench.core.errors import CebenchError, ConfigError
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.pretrain.monitor import MonitorConfig, OnlineProbe, knn_scores, round_robin
from cebench.pretrain.trainer import run


def test_leave_one_out_knn_matches_a_naive_vote():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)
    s = knn_scores(x, y, x, 3, k=4, temperature=0.5, leave_one_out=True)
    xn = x / x.norm(dim=1, keepdim=True)
    for i in range(12):
        sims = [(float(xn[i] @ xn[j]), j) for j in range(12) if j != i]
        top = sorted(sims, reverse=True)[:4]
        votes = torch.zeros(3)
        for sim, j in top:
            votes[y[j]] += torch.exp(torch.tensor(sim / 0.5))
        torch.testing.assert_close(s[i], votes / votes.sum())


def test_round_robin_takes_one_per_class_in_turn():
    assert round_robin([0, 0, 0, 1, 2, 2], 5) == [0, 3, 4, 1, 5]
    assert round_robin([1, 1, 0], 10) == [2, 0, 1]


class ColourEncoder(nn.Module):
    """Features = the image itself (globally pooled by the probe: the mean colour), plus a
    BatchNorm and a submodule kept in eval mode to see that every module's mode comes back."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.frozen = nn.Conv2d(3, 3, 1)
        self.frozen.eval()

    def forward_features(self, x):
        assert not self.training
        return {"stage1": x[:, :1], "stage2": self.bn(x) * 0 + x}


def _colour_folder(root, per_class=10):
    """Class c: images mostly of colour c (red, green, blue) with noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = 0.6 * np.eye(3)[c] + rng.uniform(0, 0.4, (36, 36, 3))
            Image.fromarray((img * 255).astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_probe_scores_separable_classes_and_restores_modes(tmp_path):
    data = _colour_folder(tmp_path / "folder")
    enc = ColourEncoder().train()
    enc.frozen.eval()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    probe = OnlineProbe(MonitorConfig(data=str(data), every=5, images=24, k=3), 32, 36, 12)
    assert [s for s in range(1, 13) if probe.due(s)] == [5, 10, 12]
    assert probe(enc, 3) == {}
    row = probe(enc, 5)
    assert probe.images.shape == (24, 3, 32, 32) and probe.labels.bincount().tolist() == [8, 8, 8]
    assert row["knn_top1"] > 80  # the mean colour gives the class away
    assert enc.training and enc.bn.training and not enc.frozen.training
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # BN stats too
    # a layer that does not tell the classes apart scores lower (the probe reads `layer`)
    one = OnlineProbe(MonitorConfig(data=str(data), images=24, k=3, layer="stage1"), 32, 36, 5)
    assert one(enc, 5)["knn_top1"] < row["knn_top1"]
    bad = OnlineProbe(MonitorConfig(data=str(data), layer="conv9"), 32, 36, 5)
    with pytest.raises(
        ConfigError, match="monitor.layer=conv9: the encoder's stages are stage1, stage2"
    ):
        bad.load(enc)


def _final_models(run_dir):
    return safe_load(run_dir / "checkpoint.pt")["models"]


def test_monitor_leaves_training_unchanged_and_logs_knn(tmp_path):
    images = write_images(tmp_path / "imgs", n=12)
    labelled = write_images(tmp_path / "folder", n=18, classes=3, seed=1)
    over = ["train.steps=5", "train.log_every=3", "train.save_every=5"]
    plain = run(tiny_config(images, tmp_path / "plain", over))
    watched = run(
        tiny_config(
            images,
            tmp_path / "watched",
            over + [f"monitor.data={labelled}", "monitor.every=2", "monitor.images=12"],
        )
    )
    a, b = _final_models(plain), _final_models(watched)
    assert a.keys() == b.keys()
    for name in a:  # weights and BatchNorm statistics, bit for bit
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    rows = read_jsonl(watched / "metrics.jsonl")
    # a probe step is logged at once (2, 4), beside the log_every steps (3) and the last (5)
    assert [r["step"] for r in rows] == [2, 3, 4, 5]
    assert [r["step"] for r in rows if "knn_top1" in r] == [2, 4, 5]
    assert all(0 <= r["knn_top1"] <= 100 and "loss_rec" in r for r in rows if "knn_top1" in r)
    assert not any("knn_top1" in r for r in read_jsonl(plain / "metrics.jsonl"))


def test_monitor_bad_folder_fails_before_training(tmp_path):
    images = write_images(tmp_path / "imgs", n=8)
    with pytest.raises(CebenchError, match="nowhere"):
        run(tiny_config(images, tmp_path / "r", [f"monitor.data={tmp_path / 'nowhere'}"]))
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="monitor.every must be >= 1"):
        tiny_config(images, tmp_path / "r", ["monitor.every=0"])
