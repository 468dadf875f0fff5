"""Benchmark suites: a YAML file -> typed dataclasses -> a grid of cells.

    suite = load_suite("default", ["seeds=[0]", "arms.ce-center.pretrain.steps=20"])
    cells = plan_cells(suite, out_dir)        # pretrain, inpaint and transfer cells in run order

A suite names pretraining *arms* (random, random-rescaled, supervised, autoencoder, context
encoder with a mask), transfer *tasks* (a registered transfer task, `kind:`, with its config),
the seeds, the budgets and the data. Config sections are plain mappings of the target config's
keys (`PretrainConfig`, the transfer harness configs); they are checked against those dataclasses
when the runner resolves each cell, before anything runs. String values may hold placeholders:

    {seed} {out} {work} {encoder} {data.synth} {data.<path name>} {budgets.<key>}
    {arm.name} {arm.method} {arm.mask} {arm.encoder} {task.name} {task.kind}

A value that is exactly one placeholder keeps the placeholder's type (`steps: "{budgets.pretrain_steps}"`
becomes an int). `{work}` is the cell's own directory `OUT/runs/<cell-id>`; `{encoder}` (transfer
and inpaint cells) is the arm's pretraining run directory, or `random:<encoder>` /
`random-rescaled:<encoder>` for the arms without pretraining; an `external` arm's `encoder` is a
whole encoder spec used as it is (`hub:torchvision/alexnet`, a run directory, an encoder.pt).

A task may name one of its kind's presets (`preset:`): its cells start from
`transfer/presets/<kind>/<preset>.yaml` (cebench.transfer.tasks) and apply the task's config keys
over it; without `preset:` they start from the config dataclass's defaults (not the task's
`default_preset`: the committed results' cells are hashed over those configs). A pretrain
section may start from a named config (`pretrain: {_base_: paper-alexnet}`), and a suite file
from another suite (`_base_: paper`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cebench.core.config import from_dict, load_yaml, named_yaml, parse_value
from cebench.core.errors import ConfigError

SUITES_DIR = Path(__file__).parent / "suites"
# arms without a pretraining cell: a Gaussian init, or an encoder spec given as it is ("external")
NO_PRETRAINING = ("random", "random-rescaled", "external")
RESERVED_TASKS = ("pretrain", "inpaint")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[A-Za-z0-9_-]+)?)\}")


@dataclass
class SynthSpec:
    """Built-in data made by `cebench data synth` into OUT/data/synth when missing."""

    seed: int = 0
    size: int = 64
    images: int = 200  # VOC-format images (half train, half val)
    unlabelled: int = 400  # pretraining images
    folder_images: int = 120  # ImageFolder images (supervised pretraining)
    unlabelled_style: str = "scenes"  # or "dead-leaves" (cebench.data.scenes.render_dead_leaves)
    object_scale: float = 1.0  # multiplies the object radii of the VOC and unlabelled scenes


@dataclass
class DataSpec:
    synth: SynthSpec | None = None
    # name -> path; "{data.synth}" and "{out}" expand; used by the config sections as {data.<name>}
    paths: dict[str, str] = field(default_factory=dict)


@dataclass
class ArmSpec:
    name: str = ""
    method: str = "context-encoder"  # NO_PRETRAINING, or a registered pretraining method
    label: str = ""  # row name in the tables; defaults to name
    # registry name, used for {arm.encoder} and random:<encoder>; for method "external" the whole
    # encoder spec (hub:torchvision/alexnet, a run directory, an encoder.pt)
    encoder: str = "tiny"
    mask: str = "none"  # center | random-block | random-region | none (metadata + {arm.mask})
    pretrain: dict[str, Any] = field(default_factory=dict)  # PretrainConfig overrides
    transfer: dict[str, Any] = field(default_factory=dict)  # overrides for every task of this arm
    inpaint: bool = False  # run `cebench inpaint` on held-out images after pretraining
    # this arm's `cebench inpaint` options (over the suite's inpaint.config)
    inpaint_config: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)  # task name -> the paper's number
    paper_time: str = ""  # the paper's pretraining time for this row
    tasks: list[str] | None = None  # transfer tasks of this arm; None = all, [] = none

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"arm name {self.name!r} must be lower-case letters, digits and '-'")
        if self.method in NO_PRETRAINING and (self.pretrain or self.inpaint):
            raise ConfigError(
                f"arm '{self.name}': method {self.method} has no pretraining or inpainting"
            )


@dataclass
class TaskSpec:
    name: str = ""
    kind: str = "classify"  # a registered transfer task (cebench.transfer.tasks)
    label: str = ""  # column name in the tables; defaults to name
    # the metric shown in the table (a key of the harness's result); "" = the kind's headline
    # metric, the first of its `metrics` (cebench.transfer.tasks.TransferTask)
    metric: str = ""
    scale: float = 1.0  # table shows value * scale (100 for fractions shown as %)
    digits: int = 1  # decimals shown in the table
    config: dict[str, Any] = field(default_factory=dict)  # transfer harness config overrides
    # start from the task's preset, transfer/presets/<kind>/<preset>.yaml ("" = the config
    # dataclass's defaults, not the task's default_preset)
    preset: str = ""
    per_layer: bool = False  # draw the accuracy-vs-layer figure from "<metric>@<layer>" metrics

    def headline(self) -> str:
        """The metric shown in the table: `metric`, else the kind's first headline metric."""
        from cebench.transfer.tasks import get_task

        return self.metric or get_task(self.kind).metrics[0]

    def validate(self) -> None:
        from cebench.transfer.tasks import get_task, list_tasks

        kinds = list_tasks()
        if self.kind not in kinds:
            raise ConfigError(f"config key 'kind' must be one of {kinds}, got {self.kind!r}")
        presets = get_task(self.kind).presets()
        if self.preset and self.preset not in presets:
            raise ConfigError(
                f"config key 'preset' must be one of {['', *presets]}, got {self.preset!r}"
            )
        if not _NAME.match(self.name) or self.name in RESERVED_TASKS:
            raise ConfigError(
                f"task name {self.name!r} must be lower-case letters, digits and '-', "
                f"and not one of {list(RESERVED_TASKS)}"
            )


@dataclass
class PaperInpaintRow:
    """One row of the paper's Table 1 (semantic inpainting), shown beside the suite's own."""

    label: str = ""
    l1_percent: float = 0.0
    l2_percent: float = 0.0
    psnr_db: float = 0.0


@dataclass
class InpaintSpec:
    config: dict[str, Any] = field(default_factory=dict)  # `cebench inpaint` options / config keys


_SLURM_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+))?(?::(\d+))?|(\d+)(?::(\d+))?(?::(\d+))?)$")
# sbatch options the Slurm launcher sets itself (per cell), not to be given in `launcher.sbatch`
_MANAGED_SBATCH = ("dependency", "output", "error", "job-name", "array", "open-mode", "wrap")


def slurm_minutes(text: str, key: str = "time") -> int:
    """A Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise ConfigError(
            f"config key '{key}' must be a Slurm time limit (MM, HH:MM:SS or D-HH:MM:SS), got {text!r}"
        )
    g = [int(x) if x else 0 for x in m.groups()]
    if m.group(1) is not None:  # D-HH[:MM[:SS]]
        seconds = ((g[0] * 24 + g[1]) * 60 + g[2]) * 60 + g[3]
    elif m.group(7) is not None:  # HH:MM:SS
        seconds = (g[4] * 60 + g[5]) * 60 + g[6]
    else:  # MM[:SS]
        seconds = g[4] * 60 + g[5]
    if seconds <= 0:
        raise ConfigError(f"config key '{key}' must be a positive time limit, got {text!r}")
    return max(1, -(-seconds // 60))


@dataclass
class ResourceSpec:
    """What one Slurm job of a kind of cell asks for (`launcher.pretrain`, `.inpaint`, `.transfer`).

    A pretraining cell with nodes x procs > 1 runs one training process per Slurm task, with
    torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."""

    nodes: int = 1
    gpus: int = 0  # GPUs per node
    procs: int = 0  # processes (Slurm tasks) per node; 0 = one per GPU, at least one
    cpus: int = 4  # CPU cores per process (data loading threads)
    mem: str = ""  # memory per node, e.g. "32G" ("" = the partition's default)
    # time limit, a string: "MM", "HH:MM:SS" or "D-HH:MM:SS" (YAML reads 1:00:00 unquoted as 3600)
    time: Any = "4:00:00"

    def processes(self) -> int:
        """Processes per node: `procs`, else one per GPU (at least one)."""
        return self.procs or max(1, self.gpus)

    def minutes(self) -> int:
        return slurm_minutes(self.time)

    def check(self, where: str) -> None:
        """ConfigError naming `where.<key>` for a bad value (called by LauncherSpec.validate)."""
        for key in ("nodes", "cpus"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'{where}.{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("gpus", "procs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'{where}.{key}' must be 0 or more, got {getattr(self, key)}")
        if self.mem and not re.fullmatch(r"\d+[KMGT]?B?", self.mem.upper()):
            raise ConfigError(f"'{where}.mem' must look like 32G or 4000M, got {self.mem!r}")
        if not isinstance(self.time, str):
            raise ConfigError(
                f'\'{where}.time\' must be a quoted string such as "24:00:00" or "90" '
                f"(minutes), got the number {self.time!r} (YAML reads 1:00:00 unquoted as 3600)"
            )
        slurm_minutes(self.time, f"{where}.time")


@dataclass
class LauncherSpec:
    """Where the cells run: `local` (this machine: in-process or --jobs worker processes) or
    `slurm` (one Slurm job per cell, submitted through submitit; see cebench.benchmarks.slurm)."""

    kind: Literal["local", "slurm"] = "local"
    partition: str = ""  # "" = the cluster's default partition
    account: str = ""
    qos: str = ""
    pretrain: ResourceSpec = field(default_factory=ResourceSpec)
    inpaint: ResourceSpec = field(default_factory=ResourceSpec)
    transfer: ResourceSpec = field(default_factory=ResourceSpec)
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra sbatch options: {constraint: a100}
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load)
    signal_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    poll_s: float = 30.0  # how often a waiting `cebench bench` asks squeue about its jobs

    def resources(self, kind: str) -> ResourceSpec:
        return getattr(self, kind)

    def validate(self) -> None:
        for kind in ("pretrain", "inpaint", "transfer"):
            self.resources(kind).check(f"launcher.{kind}")
        for kind in ("inpaint", "transfer"):
            spec = self.resources(kind)
            if spec.nodes * spec.processes() > 1:
                raise ConfigError(
                    f"launcher.{kind}: only pretraining cells run several processes; "
                    f"give {kind} cells nodes: 1 and procs: 1"
                )
        for key in self.sbatch:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", str(key)):
                raise ConfigError(f"launcher.sbatch: {key!r} is not an sbatch option name")
            if str(key).replace("_", "-") in _MANAGED_SBATCH:
                raise ConfigError(
                    f"launcher.sbatch: '{key}' is set by cebench for each cell; "
                    f"not one of {list(_MANAGED_SBATCH)}"
                )
        if self.signal_s < 0 or self.poll_s <= 0:
            raise ConfigError("launcher: signal_s must be >= 0 and poll_s > 0")


@dataclass
class MoreSeeds:
    """Seeds added while a comparison with the reference arm is undecided (`cebench.benchmarks.stats`):
    after the suite's `seeds`, each arm whose difference from the reference in some column is
    neither significant nor known to be smaller than `min_effect` (the 95% interval within
    +-min_effect, in the column's units) gets one more seed (the reference arm too), round by
    round, up to `max` seeds in all. `max: 0` (the default) runs the listed seeds only."""

    max: int = 0
    min_effect: float = 1.0


@dataclass
class Suite:
    name: str = ""
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    # the arm every other arm is tested against in the tables ("" = the arm named 'random', if any)
    reference: str = ""
    alpha: float = 0.05  # significance level of those tests (Holm-corrected per column)
    more_seeds: MoreSeeds = field(default_factory=MoreSeeds)
    budgets: dict[str, Any] = field(default_factory=dict)  # {budgets.<key>} in the config sections
    data: DataSpec = field(default_factory=DataSpec)
    pretrain: dict[str, Any] = field(default_factory=dict)  # overrides common to every arm
    transfer: dict[str, Any] = field(default_factory=dict)  # overrides common to every task
    inpaint: InpaintSpec = field(default_factory=InpaintSpec)
    arms: list[ArmSpec] = field(default_factory=list)
    tasks: list[TaskSpec] = field(default_factory=list)
    dry_run: dict[str, Any] = field(default_factory=dict)  # --set overrides applied by --dry-run
    paper_inpainting: list[PaperInpaintRow] = field(default_factory=list)  # Table 1 rows
    jobs: int = 1  # worker processes (1 = in-process); `cebench bench --jobs` overrides
    launcher: LauncherSpec = field(default_factory=LauncherSpec)  # `--launcher` overrides its kind

    def validate(self) -> None:
        if not _SUITE_NAME.match(self.name):  # it names the results folder: results/<name>
            raise ConfigError(
                f"suite name {self.name!r} must be letters, digits, '.', '_' and '-' "
                "(it names the results folder; no '/' or '..')"
            )
        if not self.seeds:
            raise ConfigError("suite needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config key 'seeds' lists a seed twice: {self.seeds}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"config key 'alpha' must be between 0 and 1, got {self.alpha}")
        if self.more_seeds.max < 0 or self.more_seeds.min_effect < 0:
            raise ConfigError("config keys 'more_seeds.max' and 'more_seeds.min_effect' must be >= 0")
        if self.reference and self.reference not in [a.name for a in self.arms]:
            raise ConfigError(
                f"config key 'reference' must name an arm, got {self.reference!r}; arms: "
                + ", ".join(a.name for a in self.arms)
            )
        from cebench.pretrain.methods import list_methods

        methods = [*NO_PRETRAINING, *list_methods()]
        for i, arm in enumerate(self.arms):
            if arm.method not in methods:
                raise ConfigError(
                    f"config key 'arms[{i}].method' must be one of {methods}, got {arm.method!r}"
                )
        if not self.arms or not self.tasks:
            raise ConfigError(f"suite '{self.name}' needs at least one arm and one task")
        for what, items in (("arm", self.arms), ("task", self.tasks)):
            names = [i.name for i in items]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ConfigError(f"duplicate {what} name(s): {sorted(dup)}")
        tasks = [t.name for t in self.tasks]
        for arm in self.arms:
            bad = [t for t in arm.tasks or [] if t not in tasks]
            if bad:
                raise ConfigError(f"arm '{arm.name}': unknown task '{bad[0]}'; tasks: {tasks}")

    def arm(self, name: str) -> ArmSpec:
        return next(a for a in self.arms if a.name == name)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)


@dataclass(frozen=True)
class Cell:
    """One unit of work: pretraining (arm x seed), inpainting (arm x seed) or transfer (arm x task x seed)."""

    id: str
    kind: Literal["pretrain", "inpaint", "transfer"]
    arm: str
    task: str  # "pretrain", "inpaint" or the transfer task's name
    seed: int
    config: dict[str, Any]  # overrides with placeholders resolved (target config's keys)
    depends: tuple[str, ...] = ()
    task_kind: str = ""  # transfer cells: the registered transfer task (cebench.transfer.tasks)
    preset: str = ""  # transfer cells: the harness preset the config starts from


def suite_path(name_or_file: str | Path) -> Path:
    """A built-in suite name (benchmarks/suites/<name>.yaml) or a YAML file path."""
    return named_yaml(name_or_file, SUITES_DIR, "suite", "built-in suites")


def load_suite(
    name_or_file: str | Path, overrides: list[str] | None = None, dry_run: bool = False
) -> Suite:
    """Read a suite, apply its `dry_run` section (when asked) and then `key=value` overrides."""
    path = suite_path(name_or_file)
    raw = load_yaml(path, (SUITES_DIR,))
    raw.setdefault("name", path.stem)
    try:
        if dry_run:
            if raw.get("dry_run") is None:
                raise ConfigError(
                    f"suite '{raw['name']}' has no dry_run section; --dry-run would run it at full size"
                )
            for key, value in raw["dry_run"].items():
                _set_path(raw, key, copy.deepcopy(value))
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"--set {item!r} is not of the form key=value")
            key, value = item.split("=", 1)
            _set_path(raw, key.strip(), parse_value(value, key.strip()) if value.strip() else "")
        return from_dict(Suite, raw)
    except ConfigError as e:
        raise ConfigError(f"suite {path}: {e}") from None


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in the raw suite; a list of named items (arms, tasks) is indexed by name."""
    parts = key.split(".")
    node: Any = raw
    top = {f.name for f in dataclasses.fields(Suite)}
    if parts[0] not in top:
        raise ConfigError(f"unknown suite key '{key}'; valid keys: {', '.join(sorted(top))}")
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            match = [x for x in node if isinstance(x, dict) and x.get("name") == part]
            if not match:
                names = [x.get("name") for x in node if isinstance(x, dict)]
                raise ConfigError(
                    f"'{'.'.join(parts[:i])}' has no item named '{part}'; names: {names}"
                )
            node = match[0]
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):  # `name.x=1`: a scalar holds no keys
                raise ConfigError(
                    f"'{key}': '{'.'.join(parts[: i + 1])}' is {node!r}, not a mapping; "
                    "it has no keys to set"
                )
    if isinstance(node, list):
        raise ConfigError(f"'{key}': give an item name after '{'.'.join(parts[:-1])}'")
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def substitute(value: Any, env: dict[str, Any], where: str = "") -> Any:
    """Replace `{name}` placeholders in every string of a nested value (see the module docstring)."""
    if isinstance(value, dict):
        return {k: substitute(v, env, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(name: str) -> Any:
        if name not in env:
            raise ConfigError(
                f"'{where}': unknown placeholder {{{name}}}; known: "
                + ", ".join("{" + k + "}" for k in sorted(env))
            )
        return env[name]

    whole = _PLACEHOLDER.fullmatch(value)
    if whole:
        return lookup(whole.group(1))
    return _PLACEHOLDER.sub(lambda m: str(lookup(m.group(1))), value)


def cell_id(arm: str, task: str, seed: int) -> str:
    return f"{arm}.{task}.s{seed}"


def data_env(suite: Suite, out_dir: Path) -> dict[str, Any]:
    """Placeholders for the data section: {out}, {data.synth}, {data.<name>}."""
    out_dir = Path(out_dir).resolve()
    env: dict[str, Any] = {"out": str(out_dir)}
    if suite.data.synth is not None:
        env["data.synth"] = str(out_dir / "data" / "synth")
    for name, p in suite.data.paths.items():
        env[f"data.{name}"] = str(
            Path(substitute(p, env, f"data.paths.{name}")).expanduser().resolve()
        )
    return env


def plan_cells(suite: Suite, out_dir: str | Path) -> list[Cell]:
    """Every cell of the suite in dependency order: pretraining, inpainting, then transfer."""
    out_dir = Path(out_dir).resolve()
    base = data_env(suite, out_dir)
    base.update({f"budgets.{k}": v for k, v in suite.budgets.items()})
    pretrain, inpaint, transfer = [], [], []
    for seed in suite.seeds:
        for arm in suite.arms:
            env = dict(
                base,
                seed=seed,
                **{
                    "arm.name": arm.name,
                    "arm.method": arm.method,
                    "arm.mask": arm.mask,
                    "arm.encoder": arm.encoder,
                },
            )
            deps: tuple[str, ...] = ()
            if arm.method == "external":
                encoder = arm.encoder
            elif arm.method in NO_PRETRAINING:
                encoder = f"{arm.method}:{arm.encoder}"
            else:
                pid = cell_id(arm.name, "pretrain", seed)
                work = out_dir / "runs" / pid
                cfg = _deep_merge(suite.pretrain, arm.pretrain)
                pretrain.append(
                    Cell(
                        pid,
                        "pretrain",
                        arm.name,
                        "pretrain",
                        seed,
                        substitute(cfg, dict(env, work=str(work)), "pretrain"),
                    )
                )
                deps, encoder = (pid,), str(work)
                if arm.inpaint:
                    iid = cell_id(arm.name, "inpaint", seed)
                    ienv = dict(env, work=str(out_dir / "runs" / iid), encoder=encoder)
                    inpaint.append(
                        Cell(
                            iid,
                            "inpaint",
                            arm.name,
                            "inpaint",
                            seed,
                            substitute(
                                _deep_merge(suite.inpaint.config, arm.inpaint_config),
                                ienv,
                                "inpaint.config",
                            ),
                            deps,
                        )
                    )
            for task in suite.tasks:
                if arm.tasks is not None and task.name not in arm.tasks:
                    continue
                tid = cell_id(arm.name, task.name, seed)
                tenv = dict(
                    env,
                    work=str(out_dir / "runs" / tid),
                    encoder=encoder,
                    **{"task.name": task.name, "task.kind": task.kind},
                )
                cfg = _deep_merge(_deep_merge(suite.transfer, task.config), arm.transfer)
                transfer.append(
                    Cell(
                        tid,
                        "transfer",
                        arm.name,
                        task.name,
                        seed,
                        substitute(cfg, tenv, f"tasks.{task.name}.config"),
                        deps,
                        task.kind,
                        task.preset,
                    )
                )
    return pretrain + inpaint + transfer


def suite_meta(suite: Suite) -> dict[str, Any]:
    """What the tables need besides the CSV: labels, order, primary metrics, the paper's numbers."""
    return {
        "name": suite.name,
        "reference": suite.reference,
        "alpha": suite.alpha,
        "arms": [
            {
                "name": a.name,
                "label": a.label or a.name,
                "method": a.method,
                "mask": a.mask,
                "paper": a.paper,
                "paper_time": a.paper_time,
                "inpaint": a.inpaint,
            }
            for a in suite.arms
        ],
        "paper_inpainting": [dataclasses.asdict(r) for r in suite.paper_inpainting],
        "tasks": [
            {
                "name": t.name,
                "label": t.label or t.name,
                "kind": t.kind,
                "metric": t.headline(),
                "scale": t.scale,
                "digits": t.digits,
                "per_layer": t.per_layer,
            }
            for t in suite.tasks
        ],
    }
