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

from pathlib import Path
from typing import Any


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


def transfer(
    task: str, preset: str | None = None, overrides: list[str] | None = None, **keys: Any
) -> dict[str, Any]:
    """Any registered transfer task (`cebench transfer TASK`, cebench.transfer.tasks): keys of its
    config dataclass on top of the named preset (None: the task's `default_preset`, as the
    command's; "": no preset, the config's defaults), then `overrides` (KEY=VALUE). Returns the
    metrics.json record. On the built-in synthetic data with another preset than the one meant
    for it (`builtin_preset`, e.g. "small"), a note says so, as the command's does."""
    from cebench.transfer.args import builtin_data_note
    from cebench.transfer.tasks import apply_task_overrides, get_task, preset_config

    t = get_task(task)
    cfg = apply_task_overrides(task, preset_config(task, preset, **keys), list(overrides or []))
    note = builtin_data_note(
        keys.get("data") or keys.get("coco_images"),
        t.builtin_preset,
        t.default_preset if preset is None else preset,
        spell=lambda name: f'preset="{name}"',
    )
    return t.run(cfg, note)


def __getattr__(name: str) -> Any:
    """`cebench.api.<task>(...)` for every registered task (`list_tasks()`): `transfer(task, ...)`."""
    from functools import partial

    from cebench.transfer.tasks import list_tasks

    if name in list_tasks():
        return partial(transfer, name)
    raise AttributeError(f"module 'cebench.api' has no attribute '{name}'")


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
