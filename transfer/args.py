"""Command-line options shared by the transfer tasks, and options -> typed config.

    p = common_parser(False, presets=task.presets(), default_preset=task.default_preset)
    given = common_keys(args)   # the transfer tasks' generic main (transfer/tasks.py) reads these

Options left out on the command line keep the preset's value; `--set key=value` reaches any
config key (`cebench.core.config.apply_overrides`, unknown keys are errors). Nothing else is changed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from cebench.core.config import check_seed, validate
from cebench.core.errors import ConfigError
from cebench.core.threads import check_workers

T = TypeVar("T")

# the config keys of every harness `cebench bench --list` shows beside a cell (a key, or (key,
# label)): a task's `settings` when it declares none (cebench.transfer.tasks.TransferTask)
HARNESS_SETTINGS: tuple[str | tuple[str, str], ...] = (
    "encoder",
    "data",
    ("train_split", "train"),
    ("val_split", "test"),
    ("input_size", "size"),
    "frozen",
    "rescale",
    "keep_trained_fc",
    ("optimizer", "optim"),
    "lr",
    "epochs",
    ("batch_size", "batch"),
)


@dataclass
class HarnessConfig:
    """The keys every transfer harness takes. Each harness's config subclasses this and sets its
    protocol's own defaults (epochs, lr, batch size, ...)."""

    encoder: str = ""
    data: str = ""
    out: str = ""
    frozen: bool = False
    train_split: str = "train"
    val_split: str = "val"
    input_size: int | None = None  # None: the encoder's own input_size
    epochs: int = 30
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    calibration_images: int = 64  # batch for random-rescaled encoders and `rescale`
    # data-dependent rescaling of Krähenbühl et al. (ICLR 2016) applied to any encoder before
    # training: none | within (within-layer step) | full (within + between-layer step);
    # see cebench.transfer.encoders
    rescale: Literal["none", "within", "full"] = "none"
    # heads with fc6/fc7 (classify head=fc, detect head=c4, segment fc_dims > 0): start from the
    # encoder's trained fc6/fc7 when it carries them (torchvision AlexNet), as the paper's
    # protocols keep them; false: always a fresh draw
    keep_trained_fc: bool = True
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    # TensorBoard event files beside log.jsonl (training losses, the results, the config)
    tensorboard: bool = True

    def validate(self) -> None:
        require_at_least(self, 1, "epochs", "batch_size")
        check_seed(self.seed, "seed")
        check_workers(self.num_workers, "config key 'num_workers'", lowest=0)
        if self.lr <= 0:
            raise ConfigError(f"config key 'lr' must be > 0, got {self.lr}")
        if self.rescale not in ("none", "within", "full"):
            raise ConfigError(
                f"config key 'rescale' must be one of ['none', 'within', 'full'], got {self.rescale!r}"
            )


def require_at_least(cfg: Any, minimum: int, *keys: str) -> None:
    """ConfigError naming the first of `keys` whose value is below `minimum`."""
    for k in keys:
        if getattr(cfg, k) < minimum:
            raise ConfigError(f"config key '{k}' must be >= {minimum}, got {getattr(cfg, k)}")


def common_parser(
    add_help: bool = True,
    *,
    presets: list[str] | None = None,
    default_preset: str = "",
    builtin_preset: str = "",
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """The common options; `--preset` chooses among `presets` (the task's YAML files), by default
    `default_preset`; `builtin_preset` is the one meant for the built-in data (both from the
    task's declaration, cebench.transfer.tasks.TransferTask)."""
    p = argparse.ArgumentParser(
        add_help=add_help, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
    p.add_argument(
        "--encoder",
        required=True,
        help="encoder.pt or run dir | random:<name>[,k=v] | random-rescaled:<name>[,k=v] | hub:torchvision/alexnet | hub:timm/resnet18",
    )
    p.add_argument(
        "--data",
        default=None,
        help="VOC root, ImageFolder root (train/, val/) or the built-in data root",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory (metrics.json, log.jsonl, model.pt, config.yaml)",
    )
    p.add_argument(
        "--preset",
        choices=presets or None,
        default=default_preset,
        help=f"the task's preset the config starts from, transfer/presets/<task>/<preset>.yaml "
        f"(default: {default_preset or 'none, the config defaults'})"
        + (f"; {builtin_preset}: the one meant for the built-in data" if builtin_preset else ""),
    )
    p.add_argument(
        "--frozen",
        action="store_true",
        default=None,
        help="freeze the encoder (default: fine-tune it)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--input-size", type=int, default=None, help="image side in pixels (default: the encoder's)"
    )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument(
        "--rescale",
        choices=["none", "within", "full"],
        default=None,
        help="data-dependent rescaling of the encoder before training (Krähenbühl et al. 2016): "
        "within-layer step, or within + between-layer step (full); default: the preset's",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. --set weight_decay=0",
    )
    return p


def common_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys of the common options (None where the option was not given)."""
    return {
        "encoder": args.encoder,
        "data": args.data,
        "out": args.out,
        "frozen": args.frozen,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "device": args.device,
        "rescale": getattr(args, "rescale", None),
    }


def preset_note(args: argparse.Namespace, builtin_preset: str) -> str | None:
    """On the built-in synthetic data with another preset than `builtin_preset` (the task's
    preset meant for that data, `TransferTask.builtin_preset`): a note naming it (the harness
    prints it once its data and encoder are ready, or adds it to the one-line error when they are
    not)."""
    data = args.data or getattr(args, "coco_images", None)
    return builtin_data_note(data, builtin_preset, getattr(args, "preset", builtin_preset))


def builtin_data_note(
    data: Any,
    builtin_preset: str,
    preset: str,
    spell: Callable[[str], str] = lambda name: f"`--preset {name}`",
) -> str | None:
    """The note for `data` when it looks like the built-in synthetic data and `preset` is not
    `builtin_preset`, else None; `spell` writes a preset as the caller passes one (the command's
    `--preset NAME`, the Python front door's `preset="NAME"`)."""
    from cebench.data.synth import builtin_reason

    if not builtin_preset or preset == builtin_preset or not data:
        return None
    reason = builtin_reason(data)
    if not reason:
        return None
    chosen = spell(preset) if preset else "the config defaults (no preset)"
    return (
        f"note: {data} looks like the built-in synthetic data ({reason}); {spell(builtin_preset)} "
        f"is the preset meant for it ({chosen} is sized for other data)"
    )


def replace_validated(cfg: T, **overrides: Any) -> T:
    """`dataclasses.replace` followed by the config's validate() hooks."""
    import dataclasses

    cfg = dataclasses.replace(cfg, **overrides)
    validate(cfg)
    return cfg
