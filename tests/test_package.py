"""The installed house: one import name, layers that import only downwards, no import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cebench
from cebench.core.fingerprint import imported_modules

ROOT = Path(__file__).resolve().parents[1]

# repository folder -> installed package
FOLDERS = {
    "cebench": "cebench",
    "pretrain": "cebench.pretrain",
    "transfer": "cebench.transfer",
    "benchmarks": "cebench.benchmarks",
}
# a module may import only from its own layer and the layers below
LAYER = {
    "cebench.core": 0,
    "cebench.data": 1,
    "cebench.pretrain": 2,
    "cebench.transfer": 3,
    "cebench.benchmarks": 4,
    "cebench": 5,  # the front door, `cebench.api` and the CLI
}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


def _layer(module: str) -> int:
    best = max((p for p in LAYER if module == p or module.startswith(p + ".")), key=len)
    return LAYER[best]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: imported_modules(p, m, known) - {m} for m, p in mods.items()}


def test_no_module_imports_a_layer_above_it():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert not bad, "imports that go upwards:\n" + "\n".join(sorted(bad))


def test_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            # a package's own submodules importing the package's parts is not a cycle of modules
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The layer rule is checked on real source: an import from above is named."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from cebench.transfer.encoders import resolve_encoder\n")
    deps = imported_modules(src, "cebench.core.m", {"cebench.transfer.encoders"})
    assert deps == {"cebench.transfer.encoders"}
    assert _layer("cebench.transfer.encoders") > _layer("cebench.core.m")


def test_every_package_folder_is_listed_in_pyproject():
    """A folder with an __init__.py missing from pyproject's package list would be left out of the wheel."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert packages <= listed, sorted(packages - listed)


def test_front_door_names():
    for name in (
        "build_encoder",
        "load_encoder",
        "pretrain_encoder",
        "inpaint",
        "classify",
        "detect",
        "segment",
        "run_suite",
        "resolve_encoder",
    ):
        assert callable(getattr(cebench, name)), name
    assert isinstance(cebench.__version__, str) and cebench.__version__[0].isdigit()
    enc = cebench.build_encoder("tiny", input_size=32)
    assert enc.num_features > 0
    with pytest.raises(AttributeError):
        cebench.no_such_thing  # noqa: B018


def test_wheel_installs_only_cebench(tmp_path):
    """Build the wheel; its only top-level name is `cebench`, and it imports from the wheel alone."""
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "cebench", "pretrain", "transfer", "benchmarks"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(
            ROOT / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}),
        )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("cebench-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        assert tops == {"cebench"}, tops
        for expected in (
            "cebench/pretrain/configs/small.yaml",
            "cebench/benchmarks/suites/default.yaml",
            "cebench/transfer/presets/classify/paper.yaml",
            "cebench/core/config.py",
            "cebench/data/voc.py",
        ):
            assert expected in names, expected
        z.extractall(tmp_path / "site")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import cebench, cebench.pretrain.trainer, cebench.transfer.detect, cebench.benchmarks.runner;"
        "from cebench.pretrain.config import named_configs; from cebench.benchmarks.suite import suite_path;"
        "assert 'small' in named_configs(), named_configs(); assert suite_path('default').is_file();"
        "from cebench.transfer.tasks import preset_config; assert preset_config('detect', 'paper').head == 'c4';"
        "assert cebench.pretrain.trainer.__file__.startswith(sys.argv[1]), cebench.pretrain.trainer.__file__;"
        "print('ok')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def test_front_door_script(tmp_path):
    """The README's Python example, at test size: pretrain, load the encoder, probe it."""
    from _train_helpers import TINY_MODEL, write_images

    imgs = write_images(tmp_path / "imgs" / "train", n=24, size=36, classes=3)
    write_images(tmp_path / "imgs" / "val", n=12, size=36, seed=1, classes=3)
    w = TINY_MODEL["encoder_kwargs"]["width"]
    run = cebench.pretrain_encoder(
        imgs,
        out=tmp_path / "run",
        config="small",
        overrides=[
            "model_preset=small-tiny",
            "model.input_size=32",
            "model.output_size=32",
            f"model.encoder_kwargs={{width: {w}}}",
            "model.decoder_widths=[8,8]",
            "model.disc_width=4",
            "data.workers=0",
            "data.load_size=36",
            "data.fill_samples=8",
            "train.steps=3",
            "train.batch_size=4",
        ],
    )
    enc, info = cebench.load_encoder(run / "encoder.pt")
    assert info["meta"]["method"] == "context-encoder" and enc.input_size == 32
    m = cebench.classify(
        encoder=str(run),
        data=str(imgs.parent),
        out=str(tmp_path / "cls"),
        preset="small",
        protocol="linear",
        overrides=["epochs=2"],
    )
    assert 0.0 <= m["metrics"]["score"] <= 100.0
    assert (tmp_path / "cls" / "metrics.json").is_file()
    with pytest.raises(cebench.ConfigError, match="nope"):
        cebench.classify(encoder=str(run), data=str(imgs.parent), out=str(tmp_path / "x"), nope=1)
