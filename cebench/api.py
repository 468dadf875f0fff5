"""The Python front door's functions: each is a thin call into the layer that does the work.

    import cebench
    run = cebench.pretrain_encoder("data/builtin/unlabelled", out="runs/ce", overrides=["train.steps=200"])
    enc = cebench.load_encoder(run / "encoder.pt")
    m = cebench.classify(encoder=str(run), data="data/builtin/imagefolder", out="runs/cls",
                         preset="small", protocol="linear")
    cebench.run_suite("mini", out="results/mini")

Every function takes the same keys as its command (`cebench pretrain`, `cebench transfer ...`,
`cebench bench`), checked the same way: an unknown key or a bad value raises `ConfigError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cebench.core.config import apply_overrides


def pretrain_encoder(
    data: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Pretrain an encoder (as `cebench pretrain --data DATA --out OUT --config CONFIG KEY=VALUE...`).

    `config` is a named config (`small`, `paper-alexnet`, ...) or a YAML file; None picks it from
    the first image's size as the command does. Returns the run directory (holding encoder.pt)."""
    from cebench.pretrain.config import PretrainConfig, load_pretrain_config
    from cebench.pretrain.train import auto_config_name
    from cebench.pretrain.trainer import run

    overrides = list(overrides or [])
    method = next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("method=")), PretrainConfig.method
    )
    name = config or auto_config_name(str(data), method, None)
    cfg = load_pretrain_config(name, [f"data.path={data}", f"train.out={out}", *overrides])
    return run(cfg)


def _harness(
    kind: str, preset: str, overrides: list[str] | None, keys: dict[str, Any]
) -> dict[str, Any]:
    import importlib

    from cebench.core.errors import ConfigError

    module = importlib.import_module(f"cebench.transfer.{kind}")
    presets = {"small": module.small_preset, "paper": module.paper_preset}
    if preset not in presets:
        raise ConfigError(f"unknown preset '{preset}' (use {' or '.join(presets)})")
    cfg = presets[preset]()
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(keys) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {kind} config key(s) {unknown}; valid keys: {', '.join(sorted(fields))}"
        )
    cfg = apply_overrides(dataclasses.replace(cfg, **keys), list(overrides or []))
    return module.run(cfg)


def classify(
    preset: str = "small", overrides: list[str] | None = None, **keys: Any
) -> dict[str, Any]:
    """Classification transfer (`cebench transfer classify`): keys of `ClassifyConfig`
    (encoder, data, out, protocol, ...) on top of the `small` or `paper` preset. Returns metrics."""
    return _harness("classify", preset, overrides, keys)


def detect(
    preset: str = "small", overrides: list[str] | None = None, **keys: Any
) -> dict[str, Any]:
    """Detection transfer (`cebench transfer detect`): keys of `DetectConfig`. Returns metrics."""
    return _harness("detect", preset, overrides, keys)


def segment(
    preset: str = "small", overrides: list[str] | None = None, **keys: Any
) -> dict[str, Any]:
    """Segmentation transfer (`cebench transfer segment`): keys of `SegmentConfig`. Returns metrics."""
    return _harness("segment", preset, overrides, keys)


def inpaint(*args: str) -> int:
    """`cebench inpaint` with its command-line options, e.g.
    `inpaint("--checkpoint", "runs/ce", "--images", "imgs", "--out", "res")`; writes OUT/metrics.json."""
    from cebench.pretrain import inpaint as command

    return command.main(command.get_args_parser().parse_args(list(args)))


def run_suite(
    suite: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    jobs: int | None = None,
    dry_run: bool = False,
) -> Any:
    """Run a benchmark suite (`cebench bench --suite SUITE --out OUT --set KEY=VALUE`); returns
    the runner's outcome (ran, cached and failed cells). Tables land in OUT."""
    from cebench.benchmarks.cells import CellExecutor
    from cebench.benchmarks.runner import Runner
    from cebench.benchmarks.suite import load_suite

    s = load_suite(suite, list(overrides or []), dry_run=dry_run)
    runner = Runner(s, out, CellExecutor(), jobs=jobs if jobs is not None else s.jobs)
    return runner.run()
