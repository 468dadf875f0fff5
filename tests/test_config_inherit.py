"""`_base_` inheritance in config and suite YAML files (cebench.core.config.load_yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cebench.core.config import load_yaml
from cebench.core.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_deep_merges_under_the_file(tmp_path):
    _write(tmp_path / "base.yaml", "a: 1\nsec: {x: 1, y: 2}\nlst: [1, 2, 3]\n")
    child = _write(tmp_path / "child.yaml", "_base_: base\nsec: {y: 20, z: 30}\nlst: [9]\nb: new\n")
    assert load_yaml(child) == {
        "a": 1,
        "sec": {"x": 1, "y": 20, "z": 30},  # mappings merge key by key
        "lst": [9],  # a list replaces
        "b": "new",
    }


def test_base_chain_list_and_relative_path(tmp_path):
    _write(tmp_path / "shared" / "one.yaml", "k: 1\nm: {a: 1}\n")
    _write(tmp_path / "two.yaml", "_base_: shared/one.yaml\nk: 2\nm: {b: 2}\n")
    _write(tmp_path / "three.yaml", "m: {c: 3}\nk: 3\n")
    child = _write(tmp_path / "sub" / "child.yaml", "_base_: [../two.yaml, ../three.yaml]\n")
    # later bases win over earlier ones; the grandparent's keys come through
    assert load_yaml(child) == {"k": 3, "m": {"a": 1, "b": 2, "c": 3}}


def test_named_base_found_in_search_dirs(tmp_path):
    _write(tmp_path / "lib" / "named.yaml", "v: lib\n")
    child = _write(tmp_path / "user" / "mine.yaml", "_base_: named\nw: 1\n")
    with pytest.raises(ConfigError, match="'named' not found"):
        load_yaml(child)
    assert load_yaml(child, (tmp_path / "lib",)) == {"v": "lib", "w": 1}


def test_base_cycle_is_a_config_error_naming_the_file(tmp_path):
    _write(tmp_path / "a.yaml", "_base_: b\nx: 1\n")
    _write(tmp_path / "b.yaml", "_base_: a\ny: 1\n")
    with pytest.raises(
        ConfigError, match=r"b\.yaml: _base_ cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"
    ):
        load_yaml(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(tmp_path / "self.yaml")


def test_missing_or_bad_base_is_a_config_error_naming_the_file(tmp_path):
    child = _write(tmp_path / "child.yaml", "_base_: nowhere\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _base_ 'nowhere' not found"):
        load_yaml(child)
    child = _write(tmp_path / "child2.yaml", "_base_: ../missing.yaml\n")
    with pytest.raises(ConfigError, match=r"child2\.yaml: _base_ file not found"):
        load_yaml(child)
    child = _write(tmp_path / "child3.yaml", "_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"child3\.yaml: _base_ must be"):
        load_yaml(child)


def test_user_pretrain_config_inherits_a_named_config(tmp_path):
    from cebench.pretrain.config import load_pretrain_config

    mine = _write(tmp_path / "mine.yaml", "_base_: paper-inpainting\ntrain: {steps: 7}\n")
    cfg = load_pretrain_config(str(mine))
    ref = load_pretrain_config("paper-inpainting")
    assert cfg.train.steps == 7
    ref.train.steps = 7
    assert cfg == ref


def test_suite_file_inherits_a_built_in_suite(tmp_path):
    from cebench.benchmarks.suite import load_suite

    mine = _write(tmp_path / "mine.yaml", "_base_: mini\nname: mine\nseeds: [3, 4]\n")
    suite, ref = load_suite(str(mine)), load_suite("mini")
    assert suite.name == "mine" and suite.seeds == [3, 4]
    assert suite.arms == ref.arms and suite.tasks == ref.tasks


def test_paper_alexnet_variants_are_a_base_plus_the_keys_that_differ():
    from cebench.core.config import to_dict
    from cebench.pretrain.config import CONFIG_DIR, load_pretrain_config

    for name in ("paper-alexnet-poolfree", "paper-alexnet-center"):
        assert load_yaml(CONFIG_DIR / f"{name}.yaml") != {}
        assert "_base_: paper-alexnet" in (CONFIG_DIR / f"{name}.yaml").read_text()
    base = to_dict(load_pretrain_config("paper-alexnet"))
    pool = to_dict(load_pretrain_config("paper-alexnet-poolfree"))
    center = to_dict(load_pretrain_config("paper-alexnet-center"))
    assert pool["model"]["encoder"] == "alexnet-poolfree" and base["model"]["encoder"] == "alexnet"
    assert {k for k in base if base[k] != pool[k]} == {"model_preset", "model"}
    assert center["mask"]["kind"] == "center" and center["optim"]["lr"] == 1e-3
    assert {k for k in base if base[k] != center[k]} == {"mask", "optim"}
    for cfg in (base, pool, center):  # paper Sec. 5.2, inherited from the base
        assert cfg["model"]["bottleneck_dropout"] == 0.5 and cfg["model"]["init"] == "dcgan"
        assert cfg["loss"] == {"lambda_rec": 1.0, "lambda_adv": 0.0, "region_weighting": "paper"}
        assert (cfg["train"]["steps"], cfg["train"]["batch_size"]) == (100000, 64)


def test_pretrain_section_with_base_names_a_config():
    """A suite's pretrain section may start from a named config (`_base_: paper-alexnet-center`)."""
    from cebench.pretrain.config import config_from_dict, load_pretrain_config

    cfg = config_from_dict({"_base_": "paper-alexnet-center", "train": {"steps": 3}})
    ref = load_pretrain_config("paper-alexnet-center", ["train.steps=3"])
    assert cfg == ref and cfg.optim.lr == 1e-3
    with pytest.raises(ConfigError, match="_base_ 'nope' not found"):
        config_from_dict({"_base_": "nope"}, "suite pretrain")


def test_plus_key_extends_the_bases_list(tmp_path):
    _write(tmp_path / "base.yaml", "lst: [1, 2]\nsec: {arms: [a], x: 1}\nother: [5]\n")
    child = _write(tmp_path / "child.yaml", "_base_: base\nlst+: [3]\nsec: {arms+: [b, c]}\n")
    assert load_yaml(child) == {"lst": [1, 2, 3], "sec": {"arms": ["a", "b", "c"], "x": 1},
                                "other": [5]}  # fmt: skip
    # a grandchild extends the resolved list of its base (which itself extended)
    grand = _write(tmp_path / "grand.yaml", "_base_: child\nlst+: [4]\n")
    assert load_yaml(grand)["lst"] == [1, 2, 3, 4]
    # two bases: the list merged from both (the later one replaced it) is extended
    _write(tmp_path / "b2.yaml", "lst: [7]\n")
    both = _write(tmp_path / "both.yaml", "_base_: [base, b2]\nlst+: [8]\n")
    assert load_yaml(both)["lst"] == [7, 8]


def test_plus_key_errors_name_the_file_and_key(tmp_path):
    _write(tmp_path / "base.yaml", "lst: [1]\nnum: 3\n")
    cases = {
        "nobase.yaml": ("lst+: [1]\n", "'lst\\+' extends the bases' list 'lst'.*NoneType"),
        "notlist.yaml": ("_base_: base\nnum+: [1]\n", "'num\\+' extends.*got int"),
        "missing.yaml": ("_base_: base\nnew+: [1]\n", "'new\\+' extends.*NoneType"),
        "both.yaml": ("_base_: base\nlst: [2]\nlst+: [3]\n", "both 'lst' and 'lst\\+' are set"),
        "scalar.yaml": ("_base_: base\nlst+: 2\n", "'lst\\+' must be a list, got 2"),
    }
    for name, (text, msg) in cases.items():
        with pytest.raises(ConfigError, match=f"{name}: {msg}"):
            load_yaml(_write(tmp_path / name, text))


def test_another_encoder_than_the_presets_drops_the_presets_encoder_kwargs(tmp_path):
    """A YAML naming model.encoder other than its preset's: the preset's width / depth are the
    preset encoder's arguments, not the new one's (timm would refuse `width=`); the preset's own
    encoder keeps merging them as before."""
    from cebench.pretrain.config import load_pretrain_config

    f = tmp_path / "vit.yaml"
    f.write_text(
        "model_preset: small-tiny\nmodel: {encoder: timm, encoder_kwargs: {model_name: resnet18}}\n"
    )
    assert load_pretrain_config(str(f)).model.encoder_kwargs == {"model_name": "resnet18"}
    f.write_text(
        "model_preset: small-alexnet\nmodel: {encoder: alexnet, encoder_kwargs: {width: 0.5}}\n"
    )
    kwargs = load_pretrain_config(str(f)).model.encoder_kwargs
    assert kwargs["width"] == 0.5 and kwargs["norm"] == "bn" and kwargs["conv1_kernel"] == 5


def test_a_selector_key_starts_its_section_afresh(tmp_path):
    """load_yaml's `rebase`: a file that sets the selector to another value than its bases drops
    their keys of the section; the same value (or none) merges as usual; between two bases too."""
    rebase = {"pick": ("sec", "a")}
    _write(tmp_path / "base.yaml", "pick: b\nsec: {x: 1, y: 2}\nother: {z: 3}\n")
    other = _write(tmp_path / "other.yaml", "_base_: base\npick: c\nsec: {y: 5}\n")
    same = _write(tmp_path / "same.yaml", "_base_: base\npick: b\nsec: {y: 5}\n")
    silent = _write(tmp_path / "silent.yaml", "_base_: base\nsec: {y: 5}\n")
    assert load_yaml(other, rebase=rebase) == {"pick": "c", "sec": {"y": 5}, "other": {"z": 3}}
    assert load_yaml(other) == {"pick": "c", "sec": {"x": 1, "y": 5}, "other": {"z": 3}}
    for f in (same, silent):
        assert load_yaml(f, rebase=rebase)["sec"] == {"x": 1, "y": 5}
    # a base without the selector stands for its default ("a")
    _write(tmp_path / "plain.yaml", "sec: {x: 1}\n")
    assert load_yaml(_write(tmp_path / "p1.yaml", "_base_: plain\npick: a\n"), rebase=rebase)[
        "sec"
    ] == {"x": 1}
    assert "sec" not in load_yaml(
        _write(tmp_path / "p2.yaml", "_base_: plain\npick: b\n"), rebase=rebase
    )
    # two bases: the second one's other pick drops the first one's section
    two = _write(tmp_path / "two.yaml", "_base_: [base, p1]\n")
    assert load_yaml(two, rebase=rebase)["sec"] == {"x": 1} and load_yaml(two)["sec"] == {
        "x": 1,
        "y": 2,
    }


def test_naming_another_model_preset_never_keeps_the_old_presets_model_keys(tmp_path):
    """`small` deepens the tiny encoder (encoder_kwargs depth 5, four up-convs). A config or an
    override that names another preset gets that preset's model, not AlexNet with a tiny
    encoder's width 16 and a `depth` argument (what a plain deep merge gave)."""
    from cebench.core.config import to_dict
    from cebench.pretrain.config import load_pretrain_config
    from cebench.pretrain.models import MODEL_PRESETS

    alexnet = MODEL_PRESETS["small-alexnet"]
    for cfg in (
        load_pretrain_config("small", ["model_preset=small-alexnet"]),
        load_pretrain_config("small-alexnet"),  # `_base_: small` + `model_preset: small-alexnet`
    ):
        assert cfg.model == alexnet and cfg.model.encoder_kwargs["width"] == 0.25
        assert "depth" not in cfg.model.encoder_kwargs
    # everything but the model comes from `small`
    a, s = to_dict(load_pretrain_config("small-alexnet")), to_dict(load_pretrain_config("small"))
    assert {k for k in s if s[k] != a[k]} == {"model_preset", "model"}
    # the overrides after the preset apply to it; the same preset keeps the file's model keys
    cfg = load_pretrain_config("small", ["model_preset=small-alexnet", "model.disc_width=8"])
    assert cfg.model.disc_width == 8 and cfg.model.encoder_kwargs == alexnet.encoder_kwargs
    same = load_pretrain_config("small", ["model_preset=small-tiny"])
    assert same.model == load_pretrain_config("small").model
    assert same.model.encoder_kwargs == {"width": 16, "depth": 5}
    # a child file naming another preset over a base with model keys, then its own model keys
    f = _write(
        tmp_path / "child.yaml",
        "_base_: small\nmodel_preset: small-dcgan\nmodel: {disc_width: 8}\n",
    )
    m = load_pretrain_config(str(f)).model
    assert m.encoder == "dcgan" and m.disc_width == 8 and m.decoder_widths == [128, 64, 32, 16]
    assert m.encoder_kwargs == MODEL_PRESETS["small-dcgan"].encoder_kwargs
