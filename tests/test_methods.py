"""Pretraining methods are registered units: adding one is one class, and it runs through
`cebench pretrain` and a suite cell like the built-in ones."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _train_helpers import write_images
from torch import nn

from cebench.cli import main as cebench
from cebench.core.errors import ConfigError
from cebench.pretrain.methods import PretrainMethod, get_method, list_methods, register_method
from cebench.pretrain.methods.base import _METHODS
from cebench.pretrain.models import build_encoder


class MeanColour(PretrainMethod):
    """A toy pretext task: predict the image's mean colour from the pooled last stage."""

    uses_fill = False

    def build(self) -> None:
        cfg = self.cfg
        self.enc_kwargs = {**cfg.model.encoder_kwargs, "input_size": cfg.model.input_size}
        enc = build_encoder(cfg.model.encoder, **self.enc_kwargs)
        net = nn.Module()
        net.encoder, net.head = enc, nn.Linear(enc.num_features, 3)
        self.models["net"] = self.prepare(net)
        self.optims["net"] = self.adam(self.models["net"], cfg.optim.lr)

    def step(self, images, labels, step):
        net, opt = self.models["net"], self.optims["net"]
        feats = net.encoder.forward_features(images)
        pooled = list(feats.values())[-1].mean((2, 3))
        loss = F.mse_loss(net.head(pooled), images.mean((2, 3)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    def encoder(self):
        return self.models["net"].encoder, self.cfg.model.encoder, self.enc_kwargs


@pytest.fixture
def toy_method():
    register_method("toy-mean-colour")(MeanColour)
    yield "toy-mean-colour"
    _METHODS.pop("toy-mean-colour")


def test_registry_lists_builtins_and_refuses_duplicates():
    assert {"context-encoder", "autoencoder", "supervised"} <= set(list_methods())
    with pytest.raises(ValueError, match="already registered"):
        register_method("autoencoder")(MeanColour)
    with pytest.raises(ConfigError, match="unknown method 'jigsaw'; methods: autoencoder"):
        get_method("jigsaw")


def test_toy_method_through_cebench_pretrain(tmp_path, toy_method):
    data = write_images(tmp_path / "imgs", n=16, size=36)
    out = tmp_path / "run"
    # key=value overrides between the options (parse_intermixed_args)
    rc = cebench(
        ["pretrain", "--data", str(data), "--config", "small", "--method", toy_method,
         "--mask", "none", "model.input_size=32", "--steps", "4", "model.output_size=32",
         "--batch-size", "4", "model.encoder_kwargs={width: 4}", "--out", str(out),
         "model.decoder_widths=[8,8]", "data.workers=0", "data.load_size=36", "train.log_every=1"]
    )  # fmt: skip
    assert rc == 0
    enc = torch.load(out / "encoder.pt", weights_only=True)
    assert enc["meta"]["method"] == toy_method and enc["name"] == "tiny"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and "loss" in lines[0]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(ckpt["models"]) == {"net"} and "head.weight" in ckpt["models"]["net"]


def test_toy_method_in_a_suite_cell(tmp_path, toy_method):
    out = tmp_path / "mini"
    rc = cebench(
        ["bench", "--suite", "mini", "--out", str(out), "--jobs", "1",
         "--set", f"arms.ce-center.method={toy_method}", "--set", "arms.ce-center.mask=none"]
    )  # fmt: skip
    assert rc == 0
    rec = json.loads((out / "cells" / "ce-center.cls-linear.s0.json").read_text())
    assert 0 <= rec["metrics"]["score"] <= 100
    enc = torch.load(out / "runs" / "ce-center.pretrain.s0" / "encoder.pt", weights_only=True)
    assert enc["meta"]["method"] == toy_method


def test_unknown_method_in_a_config_is_refused():
    from cebench.pretrain.config import load_pretrain_config

    with pytest.raises(ConfigError, match="unknown method 'jigsaw'"):
        load_pretrain_config("small", ["method=jigsaw"])


def _name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every method name compared as a string literal (==, !=, in, not in, also
    inside a tuple, list or set on either side) in this Python source."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            for item in items:
                if isinstance(item, ast.Constant) and item.value in names:
                    found.append((node.lineno, item.value))
    return found


def test_method_names_are_compared_only_in_their_own_file():
    """Everything outside a method's file and the registry asks the method (its class and
    flags), never its name: `if cfg.method == "autoencoder"` anywhere else fails here."""
    import inspect
    from pathlib import Path

    import cebench.pretrain.methods as methods_pkg

    names = set(list_methods()) - {"toy"}
    assert {"context-encoder", "autoencoder", "supervised", "rotation"} <= names
    # the scanner finds the forms it is meant to find
    probe = 'if cfg.method == "autoencoder" or m in ("x", "rotation") or "supervised" != k: pass'
    assert [n for _, n in _name_comparisons(probe, names)] == [
        "autoencoder",
        "rotation",
        "supervised",
    ]
    registry = Path(methods_pkg.__file__).parent
    allowed = {name: Path(inspect.getfile(get_method(name))).resolve() for name in names}
    repo = Path(__file__).resolve().parents[1]
    bad = []
    for folder in ("cebench", "pretrain", "transfer", "benchmarks"):
        for path in sorted((repo / folder).rglob("*.py")):
            if path.resolve().parent == registry.resolve() and path.name in (
                "base.py",
                "__init__.py",
            ):
                continue
            for line, name in _name_comparisons(path.read_text(encoding="utf-8"), names):
                if allowed[name] != path.resolve():
                    bad.append(f"{path.relative_to(repo)}:{line} compares '{name}'")
    assert not bad, "ask the method's class or flags instead:\n" + "\n".join(bad)
