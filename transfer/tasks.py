"""Transfer tasks as registered units: the one list of tasks (`cebench transfer`, the suites'
`kind:`, the benchmark cells and `cebench.<task>(...)` all read it; no other file writes the task
names down, user-facing text included).

    from cebench.transfer.tasks import TransferTask, Option, register_task, get_task, preset_config
    TASK = register_task(TransferTask(
        name="depth", module=__name__, config=DepthConfig, summary="... ; RMSE",
        options=(Option("--max-depth", "max_depth", type=float, help="..."),),
        report=lambda m, cfg: [f"depth: RMSE {m['rmse']:.3f} -> {cfg.out}/metrics.json"],
    ))
    cfg = preset_config("depth", "small", encoder="random:tiny", out="runs/depth")

Adding a task is one new file, `transfer/<name>.py` (a `Harness` subclass, its config dataclass
and the `register_task` call at the bottom), plus its presets, `transfer/presets/<name>/<preset>.yaml`
(deltas over the config's defaults; a preset may inherit another with `_base_: <preset>`): the
presets folder is how the registry finds the module to import. The command line (`cebench
transfer <name>`, one generic `main`), the suites, the cells and the Python front door follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cebench.core.config import (
    _deep_merge,
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
    validate,
)
from cebench.core.errors import ConfigError
from cebench.transfer.args import HARNESS_SETTINGS

PRESET_DIR = Path(__file__).resolve().parent / "presets"

def builtin_modules() -> list[str]:
    """The modules of the built-in tasks, found by their presets: `transfer/presets/<name>/` goes
    with `transfer/<name>.py`, which registers task <name> (no list of tasks to keep)."""
    return sorted(
        f"cebench.transfer.{d.name}" for d in PRESET_DIR.iterdir() if any(d.glob("*.yaml"))
    )


def task_names() -> list[str]:
    """The tasks' names as `list_tasks()` gives them, without importing the built-in tasks'
    modules (`builtin_modules`, plus any task registered since): for `cebench --help`, which
    stays fast."""
    return sorted({*(m.rsplit(".", 1)[1] for m in builtin_modules()), *_TASKS})


@dataclass(frozen=True)
class Option:
    """A task's own command-line option: `flag` sets config key `key` (through `convert`, if
    given) when it is given; `kwargs` go to argparse's add_argument (its default is None)."""

    flag: str
    key: str
    convert: Callable[[Any], Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self, flag: str, key: str, convert: Callable[[Any], Any] | None = None, **kwargs: Any
    ):
        object.__setattr__(self, "flag", flag)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "convert", convert)
        object.__setattr__(self, "kwargs", kwargs)


@dataclass(frozen=True)
class TransferTask:
    """What a transfer task declares: its name, module (whose `run(cfg)` trains and evaluates and
    whose docstring is its help), config dataclass, one-line summary, own CLI options, the lines
    printed after a run, a check of the keys given (e.g. a renamed key's message), the config keys
    `cebench bench --list` shows beside its cells (`settings`: a key, or (key, label)), the names
    its result gives its headline number (`metrics`, best first: a suite task without `metric:`
    shows the first, a per-layer result's `score@<layer>` is the first a layer has) and its presets:
    the one `cebench transfer` and `cebench.<task>(...)` start from when none is named
    (`default_preset`; "" = the config's defaults) and the one meant for the built-in synthetic
    data (`builtin_preset`; other presets on that data print a note naming it). A suite task
    without `preset:` takes the config's defaults, not `default_preset` (the committed results'
    cells are hashed with those configs)."""

    name: str
    module: str
    config: type
    summary: str
    options: tuple[Option, ...] = ()
    report: Callable[[dict[str, Any], Any], list[str]] | None = None
    check_keys: Callable[[dict[str, Any]], None] | None = None
    preset_dir: Path | None = None  # default: transfer/presets/<name>
    default_preset: str = "paper"
    builtin_preset: str = "small"
    settings: tuple[str | tuple[str, str], ...] = HARNESS_SETTINGS
    metrics: tuple[str, ...] = ("score",)

    @property
    def presets_folder(self) -> Path:
        return self.preset_dir if self.preset_dir is not None else PRESET_DIR / self.name

    def presets(self) -> list[str]:
        return sorted(p.stem for p in self.presets_folder.glob("*.yaml"))

    def setting_labels(self) -> list[tuple[str, str]]:
        """`settings` as (config key, label shown) pairs."""
        return [(s, s) if isinstance(s, str) else s for s in self.settings]

    def run(self, cfg: Any, note: str | None = None) -> dict[str, Any]:
        return importlib.import_module(self.module).run(cfg, note)

    def check(self, keys: dict[str, Any]) -> None:
        """The task's own check (`check_keys`) of config keys given, wherever they come from:
        `preset_config`'s keys, `--set` / `overrides` (`apply_task_overrides`) and a suite cell's
        config (cebench.benchmarks.cells)."""
        if self.check_keys is not None:
            self.check_keys(keys)


_TASKS: dict[str, TransferTask] = {}


def register_task(task: TransferTask) -> TransferTask:
    """Add `task` to the registry; a second task of the same name is refused, and so is a
    default or built-in-data preset that is not one of its presets."""
    if task.name in _TASKS and _TASKS[task.name].module != task.module:
        raise ValueError(
            f"transfer task '{task.name}' is already registered by {_TASKS[task.name].module}"
        )
    if not task.metrics:
        raise ValueError(f"transfer task '{task.name}' names no headline metric ('metrics')")
    for key in ("default_preset", "builtin_preset"):
        name = getattr(task, key)
        if name and name not in task.presets():
            raise ValueError(
                f"transfer task '{task.name}': {key} '{name}' is not one of its presets "
                f"{task.presets()} ({task.presets_folder})"
            )
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    _TASKS.pop(name, None)


def _load_builtin() -> None:
    for module in builtin_modules():
        importlib.import_module(module)


def list_tasks() -> list[str]:
    """The registered tasks' names, sorted (the order of `cebench transfer`'s subcommands)."""
    _load_builtin()
    return sorted(_TASKS)


def headline_metrics() -> list[str]:
    """Every registered task's `metrics`, in the registry's order, each once: the headline
    number's names when the task is not known (a results CSV without suite.json)."""
    names: list[str] = []
    for task in list_tasks():
        names += [m for m in _TASKS[task].metrics if m not in names]
    return names


def get_task(name: str) -> TransferTask:
    _load_builtin()
    if name not in _TASKS:
        raise ConfigError(f"unknown transfer task '{name}'; tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def examples(name: str) -> str:
    """The task's command-line examples: the first block of its module's docstring (after the
    summary line), as `cebench transfer <task> --help` shows them."""
    doc = importlib.import_module(get_task(name).module).__doc__ or ""
    return doc.split("\n\n")[1] if "\n\n" in doc else doc


def preset_config(task: str, preset: str | None = "", **keys: Any) -> Any:
    """The task's config: its defaults, the preset's YAML delta over them ("" = none, None = the
    task's `default_preset`), then `keys`; validated. An unknown preset or key is a ConfigError
    listing the valid ones."""
    t = get_task(task)
    if preset is None:
        preset = t.default_preset
    t.check(keys)
    data = to_dict(t.config())
    if preset:
        names = t.presets()
        if preset not in names:
            raise ConfigError(
                f"transfer task '{task}' has no preset '{preset}'; presets: {', '.join(names)}"
            )
        path = t.presets_folder / f"{preset}.yaml"
        try:
            data = _deep_merge(data, load_yaml(path))
            cfg = from_dict(t.config, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    else:
        cfg = t.config()
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(keys) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {task} config key(s) {unknown}; valid keys: {', '.join(sorted(fields))}"
        )
    cfg = dataclasses.replace(cfg, **keys)
    validate(cfg)
    return cfg


def apply_task_overrides(task: str, cfg: Any, overrides: list[str]) -> Any:
    """`KEY=VALUE` overrides (`--set`, the API's `overrides`) over a task's config, after the
    task's own check of the keys they name (`TransferTask.check`)."""
    given = dict(item.split("=", 1) for item in overrides if "=" in item)
    get_task(task).check({k.strip(): v for k, v in given.items()})
    return apply_overrides(cfg, overrides)


# ----- the one command-line main of every task


def get_args_parser(task: str, add_help: bool = True) -> argparse.ArgumentParser:
    """The common transfer options (transfer/args.py) plus the task's own `options`."""
    from cebench.transfer.args import common_parser

    t = get_task(task)
    doc = importlib.import_module(t.module).__doc__ or t.summary
    p = common_parser(
        add_help,
        presets=t.presets(),
        default_preset=t.default_preset,
        builtin_preset=t.builtin_preset,
        description=t.summary,
        epilog=doc,
    )
    for o in t.options:
        p.add_argument(o.flag, default=None, **o.kwargs)
    return p


def config_from_args(task: str, args: argparse.Namespace) -> Any:
    """The preset with the options given on the command line (None = not given), then --set."""
    from cebench.transfer.args import common_keys

    t = get_task(task)
    given = common_keys(args)
    for o in t.options:
        value = getattr(args, o.flag.lstrip("-").replace("-", "_"))
        if value is not None:
            given[o.key] = o.convert(value) if o.convert is not None else value
    cfg = preset_config(task, args.preset, **{k: v for k, v in given.items() if v is not None})
    return apply_task_overrides(task, cfg, list(args.set))


def main(task: str, args: argparse.Namespace) -> int:
    from cebench.transfer.args import preset_note

    t = get_task(task)
    cfg = config_from_args(task, args)
    record = t.run(cfg, preset_note(args, t.builtin_preset))
    for line in (
        t.report(record["metrics"], cfg) if t.report else [f"{task} -> {cfg.out}/metrics.json"]
    ):
        print(line)
    return 0
