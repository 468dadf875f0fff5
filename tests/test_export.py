"""`cebench export`: weights under timm / torchvision names load there and give cebench's features.

Two context encoders are pretrained for two steps (64 px): a timm ResNet-18 and a torchvision-layout
AlexNet. Their exports must load into `timm.create_model(..., pretrained=True)` (offline, nothing
downloaded) and `torchvision.models.alexnet()` with every backbone key matched, compute the same
features as cebench's `forward_features`, and come back through `resolve_encoder`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from cebench.core.errors import CheckpointError, ConfigError
from cebench.pretrain.config import config_from_dict
from cebench.pretrain.encoder_file import load_encoder, save_encoder
from cebench.pretrain.export import export_encoder
from cebench.pretrain.models import build_encoder
from cebench.pretrain.trainer import run
from cebench.transfer.encoders import resolve_encoder
from tests._train_helpers import write_images

# torchvision's AlexNet at 64 px: conv1 15x15 -> pool5 1x1; the decoder goes 1 -> 64 px
ALEXNET_TV = {"layout": "torchvision", "norm": "none", "width": 1.0}


def _pretrain(out: Path, images: Path, preset: str, model: dict) -> Path:
    """Two context-encoder steps at 64 px (BatchNorm statistics and weights move)."""
    cfg = config_from_dict(
        {
            "model_preset": preset,
            "model": {"disc_width": 4, **model},
            "data": {"path": str(images), "workers": 0, "fill_samples": 4, "load_size": 68},
            "mask": {"kind": "random-block", "overlap": 1},
            "train": {
                "out": str(out),
                "steps": 2,
                "batch_size": 4,
                "log_every": 1,
                "save_every": 2,
                "sample_every": 2,
                "seed": 1,
            },
        }
    )
    return run(cfg)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("img"), n=8, size=68)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory, images) -> Path:
    out = tmp_path_factory.mktemp("r18") / "run"
    return _pretrain(out, images, "small-resnet18", {"decoder_widths": [8, 8, 8, 8]})


@pytest.fixture(scope="module")
def alexnet_run(tmp_path_factory, images) -> Path:
    out = tmp_path_factory.mktemp("alex") / "run"
    model = {"encoder_kwargs": {**ALEXNET_TV, "conv1_kernel": 11, "conv1_stride": 4}}
    return _pretrain(out, images, "small-alexnet", {**model, "decoder_widths": [8, 8, 8, 8, 8]})


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty hub caches and no network: a download attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("export test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    yield
    assert not (tmp_path / "hf").exists() and not (tmp_path / "torch").exists()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_timm_resnet18_export_loads_in_timm(resnet_run, tmp_path, offline):
    import timm

    enc, info = load_encoder(resnet_run / "encoder.pt")
    untrained = build_encoder("timm-resnet18", input_size=64)
    assert not torch.equal(
        enc.state_dict()["stages.act1.1.running_mean"],
        untrained.state_dict()["stages.act1.1.running_mean"],
    )

    out = export_encoder(resnet_run, tmp_path / "r18.safetensors", "timm")
    from safetensors.torch import load_file

    exported = load_file(str(out))
    # the plain model's own names, every backbone key (the naive reference: timm's state dict)
    reference = timm.create_model("resnet18", num_classes=0).state_dict()
    assert set(exported) == set(reference) and len(exported) == 120
    assert "conv1.weight" in exported and "stages.act1.0.weight" not in exported

    model = timm.create_model(
        "resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(out)}, num_classes=0
    )
    # strict: every key of the plain model is in the file and nothing else
    timm.create_model("resnet18", num_classes=0).load_state_dict(exported, strict=True)
    model.eval(), enc.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = enc.forward_features(x)
        theirs = model.forward_intermediates(x, intermediates_only=True)
        assert torch.allclose(model.forward_features(x), ours["layer4"], atol=1e-5)
    for name, f in zip(["act1", "layer1", "layer2", "layer3", "layer4"], theirs, strict=True):
        assert torch.allclose(f, ours[name], atol=1e-5), name

    car = json.loads(Path(str(out) + ".json").read_text())
    meta = info["meta"]
    assert car["family"] == "timm" and car["model_name"] == "resnet18"
    assert car["encoder"] == "timm-resnet18" and car["input_size"] == 64
    assert car["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert (car["method"], car["mask"], car["steps"]) == ("context-encoder", "random-block", 2)
    assert car["git_commit"] == meta["git_commit"] and car["not_exported"] == []
    assert "pretrained_cfg_overlay=dict(file='r18.safetensors')" in car["load"]


def test_torchvision_alexnet_export_loads_in_torchvision(alexnet_run, tmp_path):
    import torchvision

    enc, _ = load_encoder(alexnet_run / "encoder.pt")
    out = export_encoder(
        alexnet_run / "encoder.pt", tmp_path / "alexnet.pth"
    )  # its own: torchvision
    sd = torch.load(out, weights_only=True)
    assert sorted(sd) == sorted(
        f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")
    )
    model = torchvision.models.alexnet().eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert unexpected == [] and all(k.startswith("classifier.") for k in missing)
    model.features.load_state_dict(
        {k.removeprefix("features."): v for k, v in sd.items()}, strict=True
    )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.features(x), enc.eval().forward_features(x)["pool5"], atol=1e-5)
    car = json.loads(Path(str(out) + ".json").read_text())
    assert (car["family"], car["export_format"], car["model_name"]) == (
        "torchvision",
        "torchvision",
        "alexnet",
    )
    assert car["kwargs"]["layout"] == "torchvision" and car["steps"] == 2


@pytest.mark.parametrize("fmt, suffix", [("timm", ".safetensors"), ("state-dict", ".pt")])
def test_exported_file_round_trips_through_resolve_encoder(resnet_run, tmp_path, fmt, suffix):
    enc, _ = load_encoder(resnet_run / "encoder.pt")
    out = export_encoder(resnet_run, tmp_path / f"r18{suffix}", fmt)
    for spec in (str(out), f"hub:{out}"):
        back, info = resolve_encoder(spec)
        assert _same_weights(back, enc), spec
        assert (
            info["normalize"]["mean"] == [0.5] * 3 and info["meta"]["method"] == "context-encoder"
        )
    bigger, info = resolve_encoder(str(out), input_size=96)
    assert bigger.input_size == 96 and info["input_size"] == 96


def test_hub_spec_takes_a_native_weight_file(tmp_path, offline):
    """`hub:SOURCE,file=PATH`: full ImageNet-style checkpoints (classifier included) from anywhere."""
    import timm
    import torchvision

    tv = torchvision.models.alexnet().state_dict()
    torch.save(tv, tmp_path / "alexnet-anywhere.pth")
    enc, info = resolve_encoder(f"hub:torchvision/alexnet,file={tmp_path / 'alexnet-anywhere.pth'}")
    assert torch.equal(enc.state_dict()["stages.conv5.0.weight"], tv["features.10.weight"])
    assert info["normalize"]["mean"] == [0.485, 0.456, 0.406]

    full = timm.create_model("resnet18")
    torch.save(full.state_dict(), tmp_path / "r18-full.pth")
    enc, _ = resolve_encoder(f"hub:timm/resnet18,file={tmp_path / 'r18-full.pth'}", input_size=64)
    assert torch.equal(
        enc.state_dict()["stages.layer4.0.conv1.weight"], full.layer4[0].conv1.weight
    )
    assert torch.equal(enc.state_dict()["stages.act1.1.running_var"], full.bn1.running_var)

    partial = {k: v for k, v in tv.items() if k != "features.6.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(
        CheckpointError, match="lacks 1 of the encoder's 10 tensors .*features.6.weight"
    ):
        resolve_encoder(f"hub:torchvision/alexnet,file={tmp_path / 'partial.pth'}")


@pytest.mark.parametrize("name, kwargs", [("tiny", {"width": 4}), ("dcgan", {"width": 4})])
def test_state_dict_export_rebuilds_with_the_readme_line(tmp_path, name, kwargs):
    import cebench

    enc = build_encoder(name, input_size=32, **kwargs)
    for m in enc.modules():  # non-default BatchNorm statistics must travel too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    save_encoder(
        tmp_path / "encoder.pt", enc, name, {"input_size": 32, **kwargs}, {"method": "autoencoder"}
    )
    with pytest.raises(
        ConfigError, match=f"'{name}' has no timm counterpart; .*--format state-dict"
    ):
        cebench.export_encoder(tmp_path, tmp_path / "x.safetensors", format="timm")
    out = cebench.export_encoder(tmp_path, tmp_path / f"{name}.safetensors")
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["export_format"] == "state-dict" and sidecar["method"] == "autoencoder"
    # the README's line
    from safetensors.torch import load_file

    rebuilt = cebench.build_encoder(sidecar["encoder"], **sidecar["kwargs"])
    rebuilt.load_state_dict(load_file(str(out)))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), enc.eval()(x))


def test_caffe_alexnet_is_refused_with_the_layout_to_pretrain(tmp_path, capsys):
    from cebench.cli import main

    enc = build_encoder("alexnet", input_size=227)
    save_encoder(tmp_path / "encoder.pt", enc, "alexnet", {"input_size": 227}, {})
    assert (
        main(["export", str(tmp_path), "--format", "torchvision", "--out", str(tmp_path / "a.pth")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "layout='caffe', norm='lrn'" in err
    assert "model.encoder_kwargs={layout: torchvision, norm: none}" in err
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "a.pth.json").exists()
    # the same layout with torchvision's architecture exports
    save_encoder(
        tmp_path / "encoder.pt",
        build_encoder("alexnet", input_size=227, **ALEXNET_TV),
        "alexnet",
        {"input_size": 227, **ALEXNET_TV},
        {},
    )
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "a.pth")]) == 0


def test_bad_export_requests(tmp_path):
    enc = build_encoder("tiny", input_size=32, width=4)
    save_encoder(tmp_path / "encoder.pt", enc, "tiny", {"input_size": 32, "width": 4}, {})
    with pytest.raises(ConfigError, match=r"\.npz: name the file \.safetensors"):
        export_encoder(tmp_path, tmp_path / "x.npz")
    with pytest.raises(CheckpointError, match="encoder not found"):
        export_encoder(tmp_path / "nope", tmp_path / "x.pt")
    (tmp_path / "bare.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no sidecar bare.safetensors.json"):
        resolve_encoder(str(tmp_path / "bare.safetensors"))
    out = export_encoder(tmp_path, tmp_path / "t.pt")
    car = json.loads(Path(str(out) + ".json").read_text())
    Path(str(out) + ".json").write_text(json.dumps({**car, "kwargs": {"width": -1}}))
    with pytest.raises(CheckpointError, match=r"t\.pt\.json: encoder 'tiny'"):
        resolve_encoder(str(out))
    Path(str(out) + ".json").write_text(json.dumps({**car, "export_format": "onnx"}))
    with pytest.raises(CheckpointError, match="'export_format' .* required"):
        resolve_encoder(str(out))
