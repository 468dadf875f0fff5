"""The three transfer harnesses end to end on tiny built-in data, with every encoder family."""

from __future__ import annotations

import json

import pytest
import torch

from cebench.core.errors import ConfigError
from cebench.core.io import safe_load
from cebench.core.logger import read_jsonl
from cebench.data.synth import generate
from cebench.transfer import classify, detect, segment
from cebench.transfer.args import replace_validated
from cebench.transfer.tasks import preset_config

FAMILIES = {
    "tiny": "random:tiny,width=8",
    "alexnet": "random:alexnet,width=0.25,conv1_kernel=5,conv1_stride=2,conv1_padding=2",
    "alexnet-poolfree": "random:alexnet-poolfree,width=0.25,conv1_kernel=5,conv1_stride=2,conv1_padding=2",
    "dcgan": "random:dcgan,width=16",
    "timm-resnet18": "random:timm-resnet18",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer") / "data"
    generate(root, size=32, images=16, unlabelled=0, folder_images=60, workers=1)
    return root


def _common(tmp_path, name, **kw):
    return {"out": str(tmp_path / name), "device": "cpu", "input_size": 32, **kw}


def _check_outputs(out, task):
    record = json.loads((out / "metrics.json").read_text())
    assert record["task"] == task and record["seed"] == record["config"]["seed"]
    assert record["wall_time_s"] > 0 and record["device"].startswith("cpu")
    assert record["encoder"]["hash"] and record["encoder"]["input_size"] == 32
    assert (out / "config.yaml").is_file()
    assert safe_load(out / "model.pt")["task"] == task
    return record


@pytest.mark.parametrize("family", list(FAMILIES))
def test_classify_every_family(family, synth, tmp_path):
    spec = FAMILIES[family]
    lin = classify.run(
        preset_config("classify", "small", 
            encoder=spec,
            data=str(synth / "VOC"),
            protocol="linear",
            probe_epochs=5,
            cache_dir="none",
            **_common(tmp_path, "lin"),
        )
    )
    per_layer = lin["metrics"]["per_layer"]
    assert lin["metrics"]["layer"] == list(per_layer)[-1]  # the headline score is the last stage's
    assert all(0 <= v["mAP"] <= 100 for v in per_layer.values()) and len(per_layer) >= 3
    ft = classify.run(
        preset_config("classify", "small", 
            encoder=spec,
            data=str(synth / "VOC"),
            protocol="finetune",
            epochs=1,
            **_common(tmp_path, "ft"),
        )
    )
    assert 0 <= ft["metrics"]["score"] <= 100 and ft["metrics"]["score"] == ft["metrics"]["mAP"]
    _check_outputs(tmp_path / "ft", "classify")
    assert [r["step"] for r in read_jsonl(tmp_path / "ft" / "log.jsonl")] == [1]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_segment_every_family(family, synth, tmp_path):
    r = segment.run(
        preset_config("segment", "small", 
            encoder=FAMILIES[family],
            data=str(synth),
            epochs=1,
            frozen=family == "dcgan",
            **_common(tmp_path, "seg"),
        )
    )
    m = r["metrics"]
    assert 0 <= m["mIoU"] <= 100 and 0 <= m["pixel_acc"] <= 100
    assert len(m["stages"]) == 3  # FCN-8s: the last stage + two finer skips
    assert len(m["per_class_iou"]) == len(m["classes"]) == 7
    _check_outputs(tmp_path / "seg", "segment")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_builds_as_detection_backbone(family):
    from cebench.transfer.encoders import resolve_encoder

    enc, info = resolve_encoder(FAMILIES[family], input_size=32)
    cfg = preset_config("detect", "small")
    model = detect.build_detector(enc, 3, 32, cfg, info["normalize"])
    assert model.backbone.out_channels == cfg.fpn_channels or len(model.backbone.levels) == 1
    images = [torch.rand(3, 32, 32), torch.rand(3, 32, 32)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 8.0, 30.0, 28.0]]), "labels": torch.tensor([3])},
    ]
    model.train()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[-1] == 4


def test_detect_voc_and_coco(synth, tmp_path):
    r = detect.run(
        preset_config("detect", "small", 
            encoder=FAMILIES["tiny"], data=str(synth / "VOC"), epochs=2, **_common(tmp_path, "det")
        )
    )
    m = r["metrics"]
    assert {"AP", "AP50", "AP75"} <= set(m) and 0 <= m["AP75"] <= m["AP50"] <= 100
    assert set(m["per_class_AP50"]) <= set((synth / "VOC" / "classes.txt").read_text().split())
    _check_outputs(tmp_path / "det", "detect")
    assert len(read_jsonl(tmp_path / "det" / "log.jsonl")) == 2
    coco = detect.run(
        preset_config("detect", "small", 
            encoder=FAMILIES["dcgan"],
            frozen=True,
            epochs=1,
            coco_ann=str(synth / "coco/annotations/instances_train.json"),
            coco_images=str(synth / "VOC/JPEGImages"),
            **_common(tmp_path, "coco"),
        )
    )
    assert coco["metrics"]["format"] == "coco" and 0 <= coco["metrics"]["AP50"] <= 100


def test_same_seed_same_metrics(synth, tmp_path):
    def once(name, seed):
        cls = classify.run(
            preset_config("classify", "small", 
                encoder="random-rescaled:tiny,width=8",
                data=str(synth / "VOC"),
                protocol="finetune",
                epochs=2,
                seed=seed,
                **_common(tmp_path, name),
            )
        )
        det = detect.run(
            preset_config("detect", "small", 
                encoder=FAMILIES["tiny"],
                data=str(synth / "VOC"),
                epochs=1,
                seed=seed,
                **_common(tmp_path, name + "d"),
            )
        )
        return cls["metrics"], det["metrics"]

    a, b, c = once("a", 0), once("b", 0), once("c", 1)
    assert a == b
    assert a[0]["per_class_AP"] != c[0]["per_class_AP"]


def test_feature_cache_hit_skips_the_encoder(synth, tmp_path, monkeypatch):
    from cebench.transfer import harness

    calls = []
    real = harness.resolve_encoder

    def counting(*args, **kwargs):
        enc, info = real(*args, **kwargs)
        first = next(iter(enc.stages.values()))
        first.register_forward_pre_hook(lambda *_: calls.append(1))
        return enc, info

    monkeypatch.setattr(harness, "resolve_encoder", counting)
    cfg = preset_config("classify", "small", 
        encoder=FAMILIES["tiny"],
        data=str(synth / "imagefolder"),
        protocol="linear",
        probe_epochs=3,
        cache_dir=str(tmp_path / "cache"),
        **_common(tmp_path, "c1"),
    )
    first = classify.run(cfg)
    assert calls and first["metrics"]["cache_hits"] == {"train": False, "val": False}
    calls.clear()
    knn = classify.run(replace_validated(cfg, protocol="knn", out=str(tmp_path / "c2")))
    assert calls == [] and knn["metrics"]["cache_hits"] == {"train": True, "val": True}
    second = classify.run(replace_validated(cfg, out=str(tmp_path / "c3")))
    assert calls == [] and second["metrics"]["per_layer"] == first["metrics"]["per_layer"]
    # other weights (another seed of the random init) miss the cache
    classify.run(replace_validated(cfg, seed=5, out=str(tmp_path / "c4")))
    assert calls


def test_low_shot_and_top1(synth, tmp_path):
    base = preset_config("classify", "small", 
        encoder=FAMILIES["tiny"],
        data=str(synth / "imagefolder"),
        protocol="knn",
        cache_dir=str(tmp_path / "cache"),
        **_common(tmp_path, "k"),
    )
    r = classify.run(replace_validated(base, shots=2))
    assert r["metrics"]["train_images"] == 2 * 6 and "top1" in r["metrics"]["per_layer"]["conv3"]
    r = classify.run(replace_validated(base, label_fraction=0.5))
    assert r["metrics"]["train_images"] == 24  # half of 48
    with pytest.raises(ConfigError, match="either shots or label_fraction"):
        classify.run(replace_validated(base, shots=2, label_fraction=0.5))


def test_knn_scores_match_a_naive_vote():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = torch.tensor([0, 0, 1, 1])
    s = classify.knn_scores(train_x, train_y, torch.tensor([[1.0, 0.2]]), 2, k=3, temperature=0.5)
    sims = torch.nn.functional.normalize(train_x, dim=1) @ torch.nn.functional.normalize(
        torch.tensor([1.0, 0.2]), dim=0
    )
    top = sims.topk(3).indices.tolist()
    votes = [sum(float(torch.exp(sims[i] / 0.5)) for i in top if train_y[i] == c) for c in (0, 1)]
    assert s[0].tolist() == pytest.approx([v / sum(votes) for v in votes], rel=1e-5)


def test_cli_writes_outputs_and_reports_errors(synth, tmp_path, capsys):
    from cebench.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "transfer",
            "segment",
            "--encoder",
            FAMILIES["tiny"],
            "--data",
            str(synth),
            "--preset",
            "small",
            "--epochs",
            "1",
            "--input-size",
            "32",
            "--device",
            "cpu",
            "--seed",
            "3",
            "--set",
            "skips=1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and "mIoU" in capsys.readouterr().out
    record = _check_outputs(out, "segment")
    assert (
        record["seed"] == 3 and record["config"]["skips"] == 1 and record["config"]["epochs"] == 1
    )
    assert (
        main(
            [
                "transfer",
                "classify",
                "--encoder",
                "nope:tiny",
                "--data",
                str(synth),
                "--preset",
                "small",  # the paper preset's VOC2007 trainval/test splits are not in synth data
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "unknown encoder spec kind" in capsys.readouterr().err
    assert (
        main(
            [
                "transfer",
                "detect",
                "--encoder",
                str(tmp_path / "missing"),
                "--data",
                str(synth),
                "--preset",
                "small",  # the paper preset's VOC2007 trainval/test splits are not in synth data
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "encoder checkpoint not found" in capsys.readouterr().err
