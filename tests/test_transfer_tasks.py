"""The transfer task registry: presets as YAML deltas, the one list of tasks, a toy task end to end."""

from __future__ import annotations

import ast
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cebench.core.config import to_dict
from cebench.core.errors import ConfigError
from cebench.transfer import tasks
from cebench.transfer.args import HARNESS_SETTINGS, HarnessConfig

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_presets_resolve_to_the_old_preset_functions_values():
    # captured from the removed `<kind>.paper_preset()` / `small_preset()` before they were deleted
    old = json.loads((ROOT / "tests" / "fixtures" / "transfer_presets.json").read_text())
    assert sorted(old) == [
        f"{k}/{p}" for k in ("classify", "detect", "segment") for p in ("paper", "small")
    ]
    for key, values in old.items():
        task, preset = key.split("/")
        assert to_dict(tasks.preset_config(task, preset)) == values, key


def test_preset_keys_override_and_bad_names_are_one_line_errors():
    cfg = tasks.preset_config("segment", "small", lr=0.5, encoder="random:tiny")
    assert (cfg.lr, cfg.epochs, cfg.encoder) == (0.5, 8, "random:tiny")
    with pytest.raises(ConfigError, match="has no preset 'huge'; presets: paper, small"):
        tasks.preset_config("segment", "huge")
    with pytest.raises(ConfigError, match=r"unknown segment config key\(s\) \['nope'\]"):
        tasks.preset_config("segment", "small", nope=1)
    with pytest.raises(ConfigError, match="replaced by 'head'"):
        tasks.preset_config("detect", "small", fpn=True)
    with pytest.raises(ConfigError, match="unknown transfer task 'depth'"):
        tasks.get_task("depth")


def test_a_tasks_own_key_check_covers_set_overrides_the_api_and_suite_cells(tmp_path, capsys):
    """detect's message for its renamed key `fpn` wherever the key comes from."""
    from cebench.benchmarks.cells import CellExecutor
    from cebench.benchmarks.suite import Cell
    from cebench.cli import main as cli

    argv = ["transfer", "detect", "--encoder", "random:tiny", "--out", str(tmp_path / "d")]
    assert cli([*argv, "--preset", "small", "--set", "fpn=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "replaced by 'head'" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="replaced by 'head'"):
        tasks.apply_task_overrides("detect", tasks.preset_config("detect"), ["fpn=false"])
    import cebench

    with pytest.raises(ConfigError, match="replaced by 'head'"):
        cebench.detect(preset="small", out=str(tmp_path / "api"), overrides=["fpn=true"])
    cell = Cell(
        id="a.det.s0",
        kind="transfer",
        arm="a",
        task="det",
        seed=0,
        task_kind="detect",
        preset="small",
        config={"fpn": True, "out": str(tmp_path / "cell")},
    )
    with pytest.raises(ConfigError, match="replaced by 'head'"):
        CellExecutor()._resolve(cell)


def test_the_registry_is_the_only_list_of_tasks():
    names = tasks.list_tasks()
    assert names == ["classify", "detect", "segment"]
    # no other source file writes the task names down as a list, tuple, set, dict or Literal
    listed = re.compile(
        r"""["']classify["']\s*[:,]\s*\(?["'](?:cebench\.transfer\.)?detect|Literal\[["']classify"""
    )
    found = []
    for folder in ("cebench", "transfer", "benchmarks", "pretrain"):
        for path in (ROOT / folder).rglob("*.py"):
            if listed.search(path.read_text()):
                found.append(str(path.relative_to(ROOT)))
    assert found == []
    # nor does any string (help, descriptions, docstrings) name two tasks or more: text that lists
    # the tasks is built from the registry, so a fourth task cannot be left out of it
    task_files = {Path(importlib.import_module(tasks.get_task(n).module).__file__) for n in names}
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    named = []
    for folder in ("cebench", "transfer", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in task_files:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if len(set(word.findall(node.value))) >= 2:
                        named.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert named == []
    # the built-in modules are found by their presets folders, not listed
    assert tasks.builtin_modules() == [f"cebench.transfer.{n}" for n in names]
    assert tasks.task_names() == names


@dataclass
class ToyConfig(HarnessConfig):
    scale: float = 1.0


def _toy_run(cfg: ToyConfig, note: str | None = None) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"value": cfg.scale * cfg.epochs, "per_layer": {"a": {"value": cfg.scale}}}
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    return {"metrics": metrics, "device": "cpu"}


run = _toy_run  # the toy task's module is this test file


@pytest.fixture
def toy(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "small.yaml").write_text("epochs: 3\nscale: 2.0\n")
    (presets / "paper.yaml").write_text("_base_: small\nepochs: 10\n")
    task = tasks.register_task(
        tasks.TransferTask(
            name="toy",
            module=__name__,
            config=ToyConfig,
            summary="a toy task; value = scale x epochs",
            options=(tasks.Option("--scale", "scale", type=float, help="the factor"),),
            report=lambda m, cfg: [f"toy: value {m['value']:.1f}"],
            preset_dir=presets,
            settings=(*HARNESS_SETTINGS, ("scale", "factor")),
            metrics=("value",),
        )
    )
    yield task
    tasks.unregister_task("toy")


def test_a_toy_task_runs_through_the_cli_the_api_and_the_cells(toy, tmp_path, capsys):
    import cebench
    from cebench.benchmarks.cells import CellExecutor
    from cebench.benchmarks.suite import Cell
    from cebench.cli import main as cli

    # a preset inherits another with `_base_`
    assert (
        tasks.preset_config("toy", "paper").epochs,
        tasks.preset_config("toy", "paper").scale,
    ) == (10, 2.0)
    out = tmp_path / "cli"
    rc = cli(
        [
            "transfer",
            "toy",
            "--encoder",
            "random:tiny",
            "--out",
            str(out),
            "--scale",
            "0.5",
            "--preset",
            "small",
        ]
    )
    assert rc == 0 and "toy: value 1.5" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["metrics"]["value"] == 1.5
    # the help's lists of tasks name it
    from cebench.cli import _help
    from cebench.transfer.commands import get_args_parser

    assert _help("transfer").endswith("classify | detect | segment | toy")
    assert get_args_parser().description.endswith("segment, toy.")
    # the Python front door knows it too
    assert (
        cebench.toy(preset="paper", encoder="random:tiny", out=str(tmp_path / "api"))["metrics"][
            "value"
        ]
        == 20.0
    )
    with pytest.raises(ConfigError, match="no preset 'big'"):
        cebench.toy(preset="big", out=str(tmp_path / "x"))
    # and a benchmark cell of kind `toy` resolves over the preset and runs
    cell = Cell(
        id="t.toy.s0",
        kind="transfer",
        arm="t",
        task="toy",
        seed=0,
        task_kind="toy",
        preset="small",
        config={"epochs": 4, "out": str(tmp_path / "cell")},
    )
    ex = CellExecutor()
    resolved = ex._resolve(cell)
    assert (resolved["epochs"], resolved["scale"]) == (4, 2.0)
    # its headline metric gives the per-layer score
    assert ex.run(cell, resolved, tmp_path)["metrics"] == {
        "value": 8.0,
        "value@a": 2.0,
        "score@a": 2.0,
    }


TOY_SUITE = """
name: toy-suite
seeds: [0]
transfer: {encoder: "{encoder}", out: "{work}", seed: "{seed}"}
arms:
  - {name: random, label: Random, method: random, encoder: tiny}
tasks:
  - {name: toy-small, label: Toy, kind: toy, preset: small, config: {epochs: 4}}
  - {name: toy-plain, label: Plain, kind: toy, metric: value@a}
"""


def test_a_suite_with_a_toy_task_lists_runs_and_tabulates_it(toy, tmp_path, capsys):
    """A suite YAML's `kind: toy`: `bench --list` shows the settings the task declares and the
    table its headline metric (the task entry names no `metric:`)."""
    from cebench.cli import main as cli

    suite = tmp_path / "toy-suite.yaml"
    suite.write_text(TOY_SUITE)
    out = tmp_path / "results"
    assert cli(["bench", "--suite", str(suite), "--out", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[1]: line for line in lines}
    assert sorted(listed) == ["random.toy-plain.s0", "random.toy-small.s0"]
    assert "preset=small encoder=random:tiny " in listed["random.toy-small.s0"]
    assert listed["random.toy-small.s0"].endswith(" epochs=4 batch=8 factor=2.0")
    assert listed["random.toy-plain.s0"].endswith(" factor=1.0")  # no preset: the defaults
    assert cli(["bench", "--suite", str(suite), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| pretraining | Toy (value) | Plain (value@a) |" in table
    assert "| Random | **8.0** | **1.0** |" in table
    meta = json.loads((out / "suite.json").read_text())
    assert [t["metric"] for t in meta["tasks"]] == ["value", "value@a"]


def test_the_tasks_declared_default_preset_is_the_cli_and_the_apis(toy, tmp_path, capsys):
    """No preset named: the command line and `cebench.<task>()` start from the task's declared
    `default_preset`; a suite task without `preset:` keeps the config's defaults."""
    import dataclasses

    import cebench
    from cebench.cli import main as cli

    argv = ["transfer", "toy", "--encoder", "random:tiny"]
    for default, value in (("paper", 20.0), ("small", 6.0)):
        tasks.register_task(dataclasses.replace(toy, default_preset=default))
        assert cli([*argv, "--out", str(tmp_path / f"cli-{default}")]) == 0
        assert f"toy: value {value:.1f}" in capsys.readouterr().out
        api = cebench.toy(encoder="random:tiny", out=str(tmp_path / f"api-{default}"))
        assert api["metrics"]["value"] == value
        assert tasks.preset_config("toy", None).epochs == (10 if default == "paper" else 3)
    assert tasks.preset_config("toy").epochs == ToyConfig().epochs  # "": no preset
    # --preset lists the task's own presets (no names written down elsewhere)
    with pytest.raises(SystemExit):
        cli([*argv, "--out", str(tmp_path / "x"), "--preset", "huge"])
    assert "(choose from 'paper', 'small')" in capsys.readouterr().err
    with pytest.raises(ValueError, match="default_preset 'big' is not one of its presets"):
        tasks.register_task(dataclasses.replace(toy, default_preset="big"))


def test_duplicate_task_names_are_refused(toy):
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task(
            tasks.TransferTask(name="toy", module="elsewhere", config=ToyConfig, summary="")
        )
