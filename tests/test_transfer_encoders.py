"""Encoder specs: checkpoints, run dirs, random / data-dependent init, hub cache, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cebench.core.errors import CheckpointError, ConfigError
from cebench.core.io import atomic_save
from cebench.pretrain.encoder_file import save_encoder
from cebench.pretrain.models import build_encoder
from cebench.transfer.encoders import resolve_encoder, weights_hash


def _save_tiny(path, width=8, input_size=32, **meta):
    enc = build_encoder("tiny", width=width, input_size=input_size)
    save_encoder(
        path, enc, "tiny", {"width": width, "input_size": input_size}, {"method": "test", **meta}
    )
    return enc


def test_checkpoint_file_and_run_dir(tmp_path):
    enc = _save_tiny(tmp_path / "encoder.pt")
    a, info = resolve_encoder(str(tmp_path / "encoder.pt"))
    b, info_dir = resolve_encoder(str(tmp_path))
    assert info["hash"] == info_dir["hash"] == weights_hash(enc)
    assert info["input_size"] == 32 and info["meta"]["method"] == "test"
    for k, v in enc.state_dict().items():
        assert torch.equal(a.state_dict()[k], v)
    # another input size: conv weights still fit, the encoder is rebuilt for it
    c, info64 = resolve_encoder(str(tmp_path), input_size=64)
    assert c.input_size == 64 and info64["hash"] == info["hash"]


def test_random_gaussian_init():
    enc, info = resolve_encoder("random:tiny,width=8", input_size=32, seed=3)
    w = enc.stages["conv2"][0].weight
    assert w.std().item() == pytest.approx(0.01, rel=0.1) and abs(w.mean().item()) < 2e-3
    assert info["kwargs"] == {"width": 8, "input_size": 32} and info["meta"]["method"] == "random"
    again, _ = resolve_encoder("random:tiny,width=8", input_size=32, seed=3)
    assert torch.equal(again.stages["conv2"][0].weight, w)
    other, _ = resolve_encoder("random:tiny,width=8", input_size=32, seed=4)
    assert not torch.equal(other.stages["conv2"][0].weight, w)


def test_random_rescaled_gives_unit_variance_channels():
    images = torch.randn(32, 3, 32, 32).clamp(-1, 1)
    enc, info = resolve_encoder("random-rescaled:dcgan", input_size=32, calibration_images=images)
    assert info["meta"]["calibration_images"] == 32
    outs = {}
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    # clone: the in-place LeakyReLU that follows overwrites the conv output
    hooks = [c.register_forward_hook(lambda m, i, o: outs.__setitem__(m, o.clone())) for c in convs]
    enc.eval()
    with torch.no_grad():
        enc(images)
    for h in hooks:
        h.remove()
    for conv in convs:
        o = outs[conv]
        std = o.std(dim=(0, 2, 3))
        assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
        if conv.bias is not None:  # the bias sets the channel's mean to magic_init's 0.1
            assert (o.mean(dim=(0, 2, 3)) - 0.1).abs().max() < 1e-4
    # a callable receives the encoder's input size
    sizes = []
    resolve_encoder(
        "random-rescaled:tiny",
        input_size=32,
        calibration_images=lambda s: sizes.append(s) or torch.randn(4, 3, s, s),
    )
    assert sizes == [32]


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ("", ConfigError, "no encoder"),
        ("bogus:tiny", ConfigError, "unknown encoder spec kind"),
        ("random:", ConfigError, "names no encoder"),
        ("random:tiny,width", ConfigError, "key=value"),
        ("random:nosuchnet", ConfigError, "unknown encoder 'nosuchnet'"),
        ("random:tiny,depthx=3", ConfigError, "bad arguments"),
        ("random-rescaled:tiny", ConfigError, "needs a batch of training images"),
        ("hub:someone/else", ConfigError, "unknown hub encoder"),
        ("/no/such/encoder.pt", CheckpointError, "not found: /no/such/encoder.pt"),
    ],
)
def test_bad_specs(spec, error, words):
    with pytest.raises(error, match=words):
        resolve_encoder(spec, input_size=32)


def test_run_dir_without_encoder_pt(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="no encoder.pt in run directory"):
        resolve_encoder(str(tmp_path))


def test_checkpoint_of_another_architecture(tmp_path):
    # the file says tiny width=8 but holds a width-16 network's weights
    wide = build_encoder("tiny", width=16, input_size=32)
    save_encoder(tmp_path / "encoder.pt", wide, "tiny", {"width": 8, "input_size": 32}, {})
    with pytest.raises(CheckpointError, match="do not fit encoder 'tiny'"):
        resolve_encoder(str(tmp_path / "encoder.pt"))
    # a transfer model.pt (not an encoder checkpoint) is refused by name
    atomic_save({"task": "classify", "state_dict": wide.state_dict()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a cebench encoder checkpoint"):
        resolve_encoder(str(tmp_path / "model.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pt is corrupt"):
        resolve_encoder(str(tmp_path / "junk.pt"))


def test_mismatched_image_size(tmp_path):
    # DCGAN adds a stride-2 stage per doubling of the input: 32 px weights do not fit 64 px
    enc = build_encoder("dcgan", input_size=32)
    save_encoder(tmp_path / "encoder.pt", enc, "dcgan", {"input_size": 32}, {})
    with pytest.raises(CheckpointError, match="input size 32 .* do not fit input size 64"):
        resolve_encoder(str(tmp_path), input_size=64)


def test_hub_weights_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for spec, where in (
        ("hub:torchvision/alexnet", "alexnet-owt-7be5be79.pth"),
        ("hub:timm/resnet18", "timm/resnet18"),
    ):
        with pytest.raises(
            CheckpointError, match=f"not found in the local cache .*{where}.*Nothing is downloaded"
        ):
            resolve_encoder(spec)


def test_hub_weights_from_the_local_cache(tmp_path, monkeypatch):
    """A torchvision AlexNet state dict placed in the torch hub cache is what the encoder gets."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = torchvision.models.alexnet().state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    enc, info = resolve_encoder("hub:torchvision/alexnet", input_size=96)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert torch.equal(convs[0].weight, ref["features.0.weight"])
    assert torch.equal(convs[-1].bias, ref["features.10.bias"])
    assert info["normalize"]["mean"] == [0.485, 0.456, 0.406] and info["input_size"] == 96
