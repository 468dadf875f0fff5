"""`cebench pretrain`: train a context encoder, an autoencoder or a supervised encoder.

    cebench pretrain --data data/builtin/unlabelled --mask random-region --out runs/ce
    cebench pretrain --data DIR --mask center --config paper-inpainting --out runs/paris optim.lr_d=1e-4
    cebench pretrain --data DIR --method autoencoder --steps 500 --out runs/ae
    cebench pretrain --data data/builtin/imagefolder/train --method supervised --out runs/sup
    cebench pretrain --out runs/ce --resume                # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m cebench.pretrain.train --data DIR --out runs/ddp   # several processes

`run(cfg) -> Path` is the library entry point (returns the run directory). The run directory gets
checkpoint.pt (+ checkpoint.prev.pt), metrics.jsonl, samples/step_XXXXXX.png, config.yaml (the
resolved config, loadable with --config), encoder.pt, summary.json and TensorBoard event files
(train.tensorboard=false: none). monitor.data=FOLDER adds the online kNN probe
(cebench.pretrain.monitor).

Exit status: 0 when done; 130 (SIGINT) or 143 (SIGTERM) when stopped by a signal after the
current step and a checkpoint (resume with --resume); 2 for input errors, a NaN loss or a failed
checkpoint write (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from cebench.core.checkpoints import CKPT, NEXT, PREV
from cebench.core.device import pick_device
from cebench.core.errors import ConfigError, DatasetError
from cebench.core.lock import FolderLock, refuse_overlap
from cebench.pretrain.config import PretrainConfig, load_pretrain_config, named_configs
from cebench.pretrain.methods import get_method, list_methods
from cebench.pretrain.trainer import TrainingInterrupted, run

__all__ = [
    "TrainingInterrupted",
    "auto_config_name",
    "build_config",
    "get_args_parser",
    "main",
    "run",
]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Pretrain an encoder by inpainting (context encoder), reconstruction "
        "(autoencoder), a pretext task (relative position, rotation, masked patches) or with "
        "labels (supervised). key=value overrides may come anywhere on the line.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1] + "\n\nnamed configs: " + ", ".join(named_configs()),
    )
    p.add_argument(
        "--data", help="training images (a folder tree); ImageFolder tree for --method supervised"
    )
    p.add_argument("--mask", choices=["center", "random-block", "random-region", "none"])
    p.add_argument("--method", choices=list_methods(), help="a registered pretraining method")
    p.add_argument(
        "--config", help="named config or YAML file (default: chosen from the image size)"
    )
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (all processes together)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3"
    )
    return p


def _first_image_side(data: str) -> int:
    from PIL import Image

    from cebench.data.images import first_image, too_large
    from cebench.data.layout import detect_layout

    if not Path(data).exists():
        raise DatasetError(f"--data {data}: no such file or directory")
    kind, where = detect_layout(data)[0]
    where = {"synth": where / "unlabelled", "voc": where / "JPEGImages"}.get(kind, where)
    path = first_image(where if where.exists() else data)  # not the whole listing: one file
    try:
        with Image.open(path) as im:  # the header only: nothing is decoded
            problem = too_large(path, im.size)
            if problem:
                raise DatasetError(problem)
            return min(im.size)
    except (OSError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def auto_config_name(data: str, method: str, mask: str | None) -> str:
    """The config for data of this size: 'small' (or 'small-supervised') for <= 96 px images; above,
    the paper's inpainting network for the centre mask (its default), else its feature-learning
    AlexNet (random masks, autoencoder, supervised)."""
    m = get_method(method)
    side = _first_image_side(data)
    if side <= 96:
        return m.small_config
    if m.centre_config is not None and mask in (None, "center"):
        return m.centre_config
    return m.large_config


def build_config(args: argparse.Namespace, notes: list[str] | None = None) -> PretrainConfig:
    """Named config (or the automatic choice) + the command-line flags + key=value overrides.
    Notes for the user go to `notes` when given (printed once the run starts), else to stderr."""
    run_dir = Path(args.out)
    if args.resume and (run_dir / "config.yaml").is_file() and not args.config:
        name: str | None = str(run_dir / "config.yaml")  # resuming: start from the run's own config
    else:
        name = args.config
    flags: list[str] = []
    if args.method:
        flags.append(f"method={args.method}")
        if get_method(args.method).needs_mask is False:
            if args.mask not in (None, "none"):
                raise ConfigError(
                    f"--method {args.method} reconstructs the whole image (drops no pixels); --mask {args.mask} makes no sense"
                )
            flags.append("mask.kind=none")
    if args.data:
        flags.append(f"data.path={args.data}")
    if args.mask:
        flags.append(f"mask.kind={args.mask}")
    for flag, key in (
        ("steps", "train.steps"),
        ("batch_size", "train.batch_size"),
        ("seed", "train.seed"),
        ("device", "train.device"),
    ):
        if getattr(args, flag) is not None:
            flags.append(f"{key}={getattr(args, flag)}")
    flags += [f"train.out={args.out}", f"train.resume={args.resume}"]
    if args.resume and not args.data and not _holds_run(run_dir):
        raise ConfigError(
            f"--resume: there is no run at {run_dir} (no {CKPT} or config.yaml there); "
            "start one with --data, or pass the --out of an existing run"
        )
    if name is None:
        if not args.data:
            raise ConfigError("--data is required (the training images)")
        name = auto_config_name(args.data, args.method or PretrainConfig.method, args.mask)
        note = f"config: {name} (chosen for the image size of {args.data}; pass --config to choose)"
        if notes is None:
            print(note, file=sys.stderr)
        else:
            notes.append(note)
    cfg = load_pretrain_config(name, flags + list(args.overrides))
    if not cfg.data.path and args.resume and (run_dir / "config.yaml").is_file():
        # resuming with another --config: the run's own training images, as its checkpoint holds
        saved = load_pretrain_config(str(run_dir / "config.yaml")).data.path
        cfg = load_pretrain_config(name, [f"data.path={saved}", *flags, *args.overrides])
    if not cfg.data.path:
        raise ConfigError("--data is required (the training images)")
    return cfg


def _holds_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(
        (run_dir / n).is_file() for n in (CKPT, NEXT, PREV, "config.yaml")
    )


def main(args: argparse.Namespace) -> int:
    notes: list[str] = []
    cfg = build_config(args, notes)
    pick_device(cfg.train.device)  # an unknown or absent device fails before anything is written
    # the run folder never holds the training images (its sample grids would join them)
    refuse_overlap(cfg.train.out, {"--data": cfg.data.path, "mask.shapes": cfg.mask.shapes})
    # one writer per run directory (process 0 only under torchrun: the others write nothing);
    # held until the process ends, so a second `cebench pretrain` or `--resume` is refused
    lock = (
        FolderLock(cfg.train.out, "cebench pretrain")
        if os.environ.get("RANK", "0") == "0"
        else nullcontext()
    )
    try:
        with lock:
            for note in notes if os.environ.get("RANK", "0") == "0" else []:
                print(note, file=sys.stderr)
            run_dir = run(cfg)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"{e}; continue with --resume", file=sys.stderr)
        return e.exit_code
    if os.environ.get("RANK", "0") == "0":
        print(f"done: {run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m cebench.pretrain.train / torchrun -m cebench.pretrain.train
    from cebench.core.errors import CebenchError

    parser = get_args_parser()
    parser.prog = "python -m cebench.pretrain.train"
    try:
        sys.exit(main(parser.parse_args()))
    except CebenchError as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        sys.exit(2)
