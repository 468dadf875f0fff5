"""Config overrides, the encoder registry, atomic checkpoints and the CLI dispatcher."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Literal

import pytest
import torch

from cebench.core.config import apply_overrides, config_hash, load_config
from cebench.core.errors import CheckpointError, ConfigError
from cebench.core.io import atomic_save, safe_load
from cebench.pretrain.encoder_file import load_encoder, save_encoder
from cebench.pretrain.models import build_encoder, list_encoders, register_encoder


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.999)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")


@dataclasses.dataclass
class Cfg:
    steps: int = 10
    name: str = "x"
    flag: bool = False
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_overrides_convert_types_and_nest():
    cfg = apply_overrides(
        Cfg(), ["steps=20", "optim.lr=1e-3", "flag=true", "name=123", "optim.betas=[0.9,0.99]"]
    )
    assert cfg.steps == 20 and cfg.optim.lr == pytest.approx(1e-3) and cfg.flag is True
    assert cfg.name == "123" and cfg.optim.betas == (0.9, 0.99)


def test_yaml_booleans_become_the_literal_words():
    """`amp=off` (and `amp: off` in a YAML file) reads as False in YAML 1.1; a Literal key with
    the word 'off' takes it as that word, other values still fail naming the key."""

    @dataclasses.dataclass
    class Train:
        amp: Literal["auto", "bf16", "off"] = "auto"
        mode: Literal["a", "b"] = "a"

    assert apply_overrides(Train(), ["amp=off"]).amp == "off"
    assert apply_overrides(Train(), ["amp=bf16"]).amp == "bf16"
    with pytest.raises(ConfigError, match="'mode' must be one of"):
        apply_overrides(Train(), ["mode=off"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'.*optim.lr"):
        apply_overrides(Cfg(), ["optim.lrr=1"])


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(ConfigError, match="'steps' must be int"):
        apply_overrides(Cfg(), ["steps=abc"])
    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        apply_overrides(Cfg(), ["optim.lr=-1"])


def test_yaml_file_and_hash(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 5\noptim:\n  lr: 0.5\n")
    cfg = load_config(Cfg, p, ["flag=1"])
    assert (cfg.steps, cfg.optim.lr, cfg.flag) == (5, 0.5, True)
    assert config_hash(cfg) != config_hash(Cfg())
    p.write_text("stepz: 5\n")
    with pytest.raises(ConfigError, match="c.yaml.*stepz"):
        load_config(Cfg, p)


def test_registry_refuses_duplicates_and_unknown():
    assert "tiny" in list_encoders()
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("tiny")(lambda **k: None)
    with pytest.raises(ConfigError, match="unknown encoder 'nope'"):
        build_encoder("nope")


def test_tiny_feature_api():
    enc = build_encoder("tiny", input_size=32, width=4)
    feats = enc.forward_features(torch.randn(2, 3, 32, 32))
    assert list(feats) == enc.feature_names == ["conv1", "conv2", "conv3"]
    assert feats["conv3"].shape == (2, enc.num_features, 4, 4)
    assert [f.reduction for f in enc.feature_info] == [2, 4, 8]


def test_encoder_roundtrip_and_bad_files(tmp_path):
    enc = build_encoder("tiny", input_size=32, width=4)
    save_encoder(
        tmp_path / "encoder.pt", enc, "tiny", {"input_size": 32, "width": 4}, {"method": "test"}
    )
    enc2, info = load_encoder(tmp_path / "encoder.pt")
    assert info["meta"]["method"] == "test"
    x = torch.randn(1, 3, 32, 32)
    enc.eval(), enc2.eval()
    assert torch.equal(enc(x), enc2(x))
    # truncated file: clear error naming it
    data = (tmp_path / "encoder.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="bad.pt"):
        safe_load(tmp_path / "bad.pt")
    # arbitrary pickled objects are refused (weights_only)
    torch.save({"x": Optim()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        safe_load(tmp_path / "evil.pt")


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1}, path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointError, match="No space left"):
        atomic_save({"step": 2}, path)
    assert safe_load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "cebench.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for name in ("data", "pretrain", "transfer", "bench", "speed"):
        assert name in out.stdout


def test_atomic_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_save({"step": 1}, tmp_path / "a.pt")
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_named_yaml_resolves_names_and_paths(tmp_path):
    from cebench.core.config import named_yaml

    (tmp_path / "small.yaml").write_text("a: 1\n")
    assert named_yaml("small", tmp_path, "config", "named configs") == tmp_path / "small.yaml"
    assert (
        named_yaml(tmp_path / "small.yaml", tmp_path, "config", "named") == tmp_path / "small.yaml"
    )
    with pytest.raises(ConfigError, match="unknown config 'big'; named configs: small"):
        named_yaml("big", tmp_path, "config", "named configs")
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        named_yaml(tmp_path / "nope.yaml", tmp_path, "config", "named configs")
