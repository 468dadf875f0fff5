"""`cebench pretrain`: train a context encoder, an autoencoder or a supervised encoder.

    cebench pretrain --data data/builtin/unlabelled --mask random-region --out runs/ce
    cebench pretrain --data DIR --mask center --config paper-inpainting --out runs/paris optim.lr_d=1e-4
    cebench pretrain --data DIR --method autoencoder --steps 500 --out runs/ae
    cebench pretrain --data data/builtin/imagefolder/train --method supervised --out runs/sup
    cebench pretrain --out runs/ce --resume                # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m pretrain.train --data DIR --out runs/ddp   # several processes

`run(cfg) -> Path` is the library entry point (returns the run directory). The run directory gets
checkpoint.pt (+ checkpoint.prev.pt), metrics.jsonl, samples/step_XXXXXX.png, config.yaml (the
resolved config, loadable with --config), encoder.pt and summary.json.

Exit status: 0 when done; 130 (SIGINT) or 143 (SIGTERM) when stopped by a signal after the
current step and a checkpoint (resume with --resume); 2 for input errors, a NaN loss or a failed
checkpoint write (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from pretrain.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from pretrain.pretrain_config import PretrainConfig, load_pretrain_config, named_configs

__all__ = ["TrainingInterrupted", "build_config", "get_args_parser", "main", "run"]


class TrainingInterrupted(Exception):
    """Raised by `run` after a signal stopped training and the checkpoint was saved."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        super().__init__(
            f"stopped by signal {signum} at step {step}; checkpoint saved in {run_dir}"
        )
        self.signum, self.step, self.run_dir = signum, step, run_dir

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Pretrain an encoder by inpainting (context encoder), reconstruction "
        "(autoencoder) or with labels (supervised).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1] + "\n\nnamed configs: " + ", ".join(named_configs()),
    )
    p.add_argument(
        "--data", help="training images (a folder tree); ImageFolder tree for --method supervised"
    )
    p.add_argument("--mask", choices=["center", "random-block", "random-region", "none"])
    p.add_argument("--method", choices=["context-encoder", "autoencoder", "supervised"])
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

    from pretrain.data import list_images

    path = list_images(data)[0]
    try:
        with Image.open(path) as im:
            return min(im.size)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def auto_config_name(data: str, method: str) -> str:
    """The preset for data of this size: 'small' (or 'small-supervised') for <= 96 px images,
    else the paper's inpainting network (128 px)."""
    side = _first_image_side(data)
    if side <= 96:
        return "small-supervised" if method == "supervised" else "small"
    return "paper-inpainting"


def build_config(args: argparse.Namespace) -> PretrainConfig:
    """Named config (or the automatic choice) + the command-line flags + key=value overrides."""
    run_dir = Path(args.out)
    if args.resume and (run_dir / "config.yaml").is_file() and not args.config:
        name: str | None = str(run_dir / "config.yaml")  # resuming: start from the run's own config
    else:
        name = args.config
    flags: list[str] = []
    if args.method:
        flags.append(f"method={args.method}")
        if args.method == "autoencoder":
            if args.mask not in (None, "none"):
                raise ConfigError(
                    f"--method autoencoder reconstructs the whole image; --mask {args.mask} makes no sense"
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
    if name is None:
        if not args.data:
            raise ConfigError("--data is required (the training images)")
        name = auto_config_name(args.data, args.method or "context-encoder")
        print(
            f"config: {name} (chosen for the image size of {args.data}; pass --config to choose)",
            file=sys.stderr,
        )
    cfg = load_pretrain_config(name, flags + list(args.overrides))
    if not cfg.data.path:
        raise ConfigError("--data is required (the training images)")
    return cfg


def main(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    try:
        run_dir = run(cfg)
    except TrainingInterrupted as e:
        print(f"{e}; continue with --resume", file=sys.stderr)
        return e.exit_code
    print(f"done: {run_dir}", file=sys.stderr)
    return 0


def git_commit() -> str | None:
    """HEAD of the repository holding this package (+ '-dirty' with local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


class SignalFlag:
    """SIGINT/SIGTERM set a flag instead of killing the process; the loop stops after the step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: give up waiting
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def write_summary(path: Path, data: dict[str, Any]) -> None:
    from pretrain.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_config(path: Path, cfg: PretrainConfig, commit: str | None) -> None:
    from pretrain.checkpoint import atomic_write_text
    from pretrain.config import to_dict

    header = f"# resolved cebench pretrain config\n# git commit: {commit or 'unknown'}\n"
    atomic_write_text(path, header + yaml.safe_dump(to_dict(cfg), sort_keys=False))


def finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


def _resumed_config(cfg: PretrainConfig, state: dict[str, Any]) -> PretrainConfig:
    """The run's saved config; only run-time keys (steps, intervals, device, workers, paths) may change."""
    from pretrain.config import to_dict
    from pretrain.pretrain_config import config_from_dict

    saved = config_from_dict(state["config"], "checkpoint config")
    for section, keys in RUNTIME_KEYS.items():
        for key in keys:
            setattr(getattr(saved, section), key, getattr(getattr(cfg, section), key))
    new, old = _flatten(to_dict(cfg)), _flatten(to_dict(saved))
    ignored = sorted(
        k for k in new if new[k] != old.get(k) and k not in ("optim.lr", "data.fill_value")
    )
    if ignored:
        print(
            f"note: resuming with the run's saved config; ignoring changed keys: {', '.join(ignored)}",
            file=sys.stderr,
        )
    return saved


RUNTIME_KEYS = {
    "train": ("out", "steps", "resume", "device", "log_every", "save_every", "sample_every"),
    "data": ("path", "workers"),
}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "encoder_kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_consistency(cfg: PretrainConfig) -> None:
    """Combinations the model cannot train (a config error, not a silent change)."""
    if cfg.method == "autoencoder" and cfg.mask.kind != "none":
        raise ConfigError(f"method=autoencoder needs mask.kind=none, got {cfg.mask.kind}")
    if cfg.method == "context-encoder" and cfg.mask.kind == "none":
        raise ConfigError(
            "method=context-encoder needs a mask (center, random-block, random-region); "
            "mask none is --method autoencoder"
        )
    if cfg.method != "supervised" and cfg.model.predict == "region":
        if cfg.mask.kind != "center":
            raise ConfigError(
                f"model.predict=region predicts the centre region; mask.kind={cfg.mask.kind} "
                "needs model.predict=image and model.output_size=model.input_size"
            )
        region = cfg.mask.region or cfg.model.input_size // 2
        if region != cfg.model.output_size:
            raise ConfigError(
                f"mask.region ({region}) must equal model.output_size ({cfg.model.output_size}) "
                "when model.predict=region"
            )


def _worker_error(e: Exception) -> DatasetError:
    """A DatasetError re-raised from a DataLoader worker carries the worker's traceback: keep the
    last line (the message naming the image)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else str(e)
    prefix = "pretrain.errors.DatasetError: "
    return DatasetError(last[len(prefix) :] if last.startswith(prefix) else last)


def run(cfg: PretrainConfig) -> Path:
    """Run (or, with cfg.train.resume, continue) one pretraining job; returns the run directory.

    Raises TrainingInterrupted after SIGINT/SIGTERM (checkpoint saved), TrainingError on a
    non-finite loss (the last good checkpoint kept), CheckpointError if a checkpoint cannot be
    written (the previous one kept), DatasetError / ConfigError for bad input."""
    from pretrain import distributed as D
    from pretrain.device import pick_device

    if not cfg.train.out:
        raise ConfigError("train.out (--out) is required: the run directory")
    device = pick_device(cfg.train.device)
    dist = D.init_from_env(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    started_here = dist.enabled
    try:
        return _run(cfg, device, dist)
    finally:
        if started_here:
            D.shutdown()


def _run(cfg: PretrainConfig, device: torch.device, dist: Any) -> Path:
    import random

    import numpy as np

    from pretrain import distributed as D
    from pretrain.checkpoint import save_encoder
    from pretrain.config import to_dict
    from pretrain.data import ImageFolderDataset, list_images
    from pretrain.device import describe
    from pretrain.engine import GANParts, batch_masks, context_encoder_step, supervised_step
    from pretrain.logger import MetricLogger
    from pretrain.models import build_encoder
    from pretrain.models.context_encoder import build_context_encoder, build_discriminator
    from pretrain.pretrain_config import RELEASED_MEAN_RGB
    from pretrain.resume import (
        CKPT,
        NEXT,
        PREV,
        load_training_checkpoint,
        rng_state,
        save_training_checkpoint,
        set_rng_state,
        truncate_metrics,
    )
    from pretrain.samples import composite, save_grid
    from pretrain.supervised import SupervisedNet
    from pretrain.train_data import StepBatchSampler, TrainImages, collate, dataset_mean

    main_proc = dist.is_main
    say = (lambda msg: print(msg, file=sys.stderr)) if main_proc else (lambda msg: None)
    run_dir = Path(cfg.train.out)
    has_ckpt = any((run_dir / n).exists() for n in (CKPT, NEXT, PREV))
    state: dict[str, Any] | None = None
    if has_ckpt and not cfg.train.resume:
        raise ConfigError(
            f"{run_dir} already holds a training run ({CKPT}); pass --resume to continue it "
            "or choose another --out"
        )
    if has_ckpt:
        state, path = load_training_checkpoint(run_dir)
        cfg = _resumed_config(cfg, state)
        say(f"resuming {path} at step {state['step']} of {cfg.train.steps}")
    elif cfg.train.resume:
        say(f"no checkpoint in {run_dir}: starting from step 0")
    check_consistency(cfg)
    supervised = cfg.method == "supervised"
    start_step = int(state["step"]) if state else 0

    # data (the fill value is part of the config once resolved, so a resumed run reuses it)
    if supervised:
        folder = ImageFolderDataset(cfg.data.path)
        paths, labels, classes = [p for p, _ in folder.samples], folder.targets, folder.classes
    else:
        paths, labels, classes = list_images(cfg.data.path), None, []
        if cfg.data.fill_value is None:
            if cfg.data.fill == "released":
                cfg.data.fill_value = [round(v, 6) for v in RELEASED_MEAN_RGB]
            else:
                mean = (
                    dataset_mean(
                        paths, cfg.data.fill_samples, cfg.data.load_size, cfg.data.skip_bad_images
                    )
                    if main_proc
                    else None
                )
                cfg.data.fill_value = D.broadcast_object(mean)  # type: ignore[assignment]
    if cfg.optim.lr is None:
        cfg.optim.lr = cfg.resolved_lr()
        say(
            f"optim.lr = {cfg.optim.lr:g} (released rule: 10x optim.lr_d under the joint loss, else equal)"
        )
    ds = TrainImages(
        paths,
        labels,
        size=cfg.model.input_size,
        load_size=cfg.data.load_size,
        crop=cfg.data.crop,
        flip=cfg.data.flip,
        skip_bad_images=cfg.data.skip_bad_images,
    )

    # models: same seed on every process -> identical initial weights
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    torch.manual_seed(cfg.train.seed)
    disc = None
    if supervised:
        enc_kwargs = {**cfg.model.encoder_kwargs, "input_size": cfg.model.input_size}
        net: torch.nn.Module = SupervisedNet(
            build_encoder(cfg.model.encoder, **enc_kwargs), len(classes)
        )
        enc_name = cfg.model.encoder
    else:
        net = build_context_encoder(cfg.model)
        enc_name, enc_kwargs = net.encoder_name, net.encoder_kwargs
        if cfg.method == "context-encoder" and cfg.loss.lambda_adv > 0:
            disc = build_discriminator(cfg.model)
    if dist.enabled:
        net = D.convert_sync_batchnorm(net, device.type)
        disc = D.convert_sync_batchnorm(disc, device.type) if disc is not None else None
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    net.to(device, memory_format=fmt)
    if disc is not None:
        disc.to(device, memory_format=fmt)

    def adam(params: Any, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(
            params,
            lr=lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            weight_decay=cfg.optim.weight_decay,
            fused=device.type == "cuda" or None,
        )

    opt = adam(net.parameters(), cfg.optim.lr)
    opt_d = adam(disc.parameters(), cfg.optim.lr_d) if disc is not None else None
    if state is not None:
        net.load_state_dict(state["models"]["net"])
        opt.load_state_dict(state["optims"]["net"])
        if disc is not None and opt_d is not None:
            disc.load_state_dict(state["models"]["disc"])
            opt_d.load_state_dict(state["optims"]["disc"])
        rngs = state["rng"]
        set_rng_state(rngs[dist.rank] if len(rngs) == dist.world_size else rngs[0])
    net.train()
    parts = GANParts(
        net,
        opt,
        disc,
        opt_d,
        lambda_rec=1.0 if cfg.method == "autoencoder" else cfg.loss.lambda_rec,
        lambda_adv=cfg.loss.lambda_adv,
        overlap=cfg.mask.overlap,
        border_weight=cfg.mask.border_weight,
    )
    fill = torch.tensor(cfg.data.fill_value or [0.5] * 3, device=device) * 2 - 1  # [0,1] -> [-1,1]
    bf16 = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")

    commit = git_commit()
    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir / "config.yaml", cfg, commit)
        truncate_metrics(run_dir / "metrics.jsonl", start_step)
    workers = cfg.data.workers if cfg.data.workers >= 0 else min(4, os.cpu_count() or 1)
    sampler = StepBatchSampler(
        len(ds),
        cfg.train.batch_size,
        cfg.train.seed,
        start_step,
        cfg.train.steps,
        dist.rank,
        dist.world_size,
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    logger = MetricLogger(
        run_dir / "metrics.jsonl" if main_proc else None,
        total=cfg.train.steps,
        desc=f"pretrain {cfg.method}",
        start=start_step,
        enabled=main_proc,
    )
    wall_before = float(state["wall_time"]) if state else 0.0
    skipped_total = int(state.get("skipped_images", 0)) if state else 0
    session_start = time.perf_counter()
    tick = (session_start, start_step)
    pending: list[tuple[int, dict[str, torch.Tensor]]] = []
    skipped_local = 0
    last_row: dict[str, Any] = {}
    last_saved = start_step

    def flush(step: int) -> None:
        """Copy pending metrics to the host once, stop on a non-finite loss, log the last step."""
        nonlocal tick, pending, skipped_local, skipped_total, last_row
        names = list(pending[0][1])
        vals = torch.stack([torch.stack([m[k].float() for k in names]) for _, m in pending])
        extra = torch.tensor([float(skipped_local)], device=vals.device)
        if dist.enabled:
            vals, extra = D.all_reduce_sum(vals) / dist.world_size, D.all_reduce_sum(extra)
        vals = vals.cpu()
        for i, (s, _) in enumerate(pending):
            for j, k in enumerate(names):
                if not finite(float(vals[i, j])):
                    logger.close()
                    good = f"step {last_saved}" if last_saved else "none yet"
                    raise TrainingError(
                        f"{k} became {float(vals[i, j])} at step {s}; training stopped. The last good "
                        f"checkpoint ({run_dir / CKPT}, {good}) is kept; lower optim.lr or check the data"
                    )
        skipped_total += int(extra.item())
        now = time.perf_counter()
        row = {k: float(vals[-1, j]) for j, k in enumerate(names)}
        row["img_per_s"] = round(
            (step - tick[1]) * cfg.train.batch_size / max(now - tick[0], 1e-9), 2
        )
        row["lr"] = opt.param_groups[0]["lr"]
        if skipped_total:
            row["skipped_images"] = skipped_total
        logger.update(step, **row)
        tick, pending, skipped_local, last_row = (now, step), [], 0, row

    def save(step: int) -> None:
        nonlocal last_saved
        rngs = D.gather_objects(rng_state())
        err = None
        if main_proc:
            ckpt = {
                "step": step,
                "epoch": sampler.position(step)[0],
                "position": sampler.position(step)[1],
                "config": to_dict(cfg),
                "rng": rngs,
                "fill_value": cfg.data.fill_value,
                "models": {
                    "net": net.state_dict(),
                    **({"disc": disc.state_dict()} if disc is not None else {}),
                },
                "optims": {
                    "net": opt.state_dict(),
                    **({"disc": opt_d.state_dict()} if opt_d is not None else {}),
                },
                "wall_time": wall_before + time.perf_counter() - session_start,
                "skipped_images": skipped_total,
                "world_size": dist.world_size,
            }
            try:
                save_training_checkpoint(run_dir, ckpt)
            except CheckpointError as e:
                prev = (
                    f"the previous checkpoint ({run_dir / CKPT}, step {last_saved}) is intact"
                    if last_saved
                    else "no earlier checkpoint"
                )
                err = f"{e}; training stopped at step {step}, {prev}"
        err = D.broadcast_object(err)
        if err:
            logger.close()
            raise CheckpointError(str(err))
        last_saved = step

    step = start_step
    with SignalFlag() as sig:
        it = iter(loader)
        while step < cfg.train.steps:
            try:
                images, labels_t, n_bad = next(it)
            except DatasetError as e:
                logger.close()
                raise _worker_error(e) from None
            images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
            skipped_local += n_bad
            if supervised:
                m = supervised_step(
                    net,
                    opt,
                    images,
                    labels_t.to(device, non_blocking=True),
                    world_size=dist.world_size,
                    bf16=bf16,
                )
            else:
                hole = batch_masks(
                    cfg.mask.kind,
                    size=cfg.model.input_size,
                    region=cfg.mask.region or cfg.model.input_size // 2,
                    overlap=cfg.mask.overlap,
                    coverage=cfg.mask.coverage,
                    step=step,
                    seed=cfg.train.seed,
                    global_batch=cfg.train.batch_size,
                    rank=dist.rank,
                    world_size=dist.world_size,
                    device=device,
                )
                m = context_encoder_step(
                    parts,
                    images,
                    hole,
                    fill,
                    autoencoder=cfg.method == "autoencoder",
                    world_size=dist.world_size,
                    bf16=bf16,
                )
            step += 1
            pending.append((step, m))
            stop = sig.signum is not None
            if dist.enabled:
                stop = D.any_process(stop, device)
            save_due = step % cfg.train.save_every == 0 or step == cfg.train.steps or stop
            if step % cfg.train.log_every == 0 or save_due:
                flush(step)
            if (
                main_proc
                and not supervised
                and cfg.train.sample_every
                and step % cfg.train.sample_every == 0
            ):
                net.eval()  # eval: no BatchNorm statistics update, no collective in synced BatchNorm
                with torch.no_grad():
                    masked = images[:8].clone()
                    masked = torch.where(hole[:8], fill.view(1, 3, 1, 1), masked)
                    pred = net(masked).float()
                net.train()
                save_grid(
                    run_dir / "samples" / f"step_{step:06d}.png",
                    [masked, composite(images[:8], hole[:8], pred), images[:8]],
                )
            if save_due:
                save(step)
            if stop:
                logger.close()
                raise TrainingInterrupted(sig.signum or signal.SIGTERM, step, run_dir)
    logger.close()
    if step > last_saved:  # a resumed run that was already complete has nothing new to save
        save(step)

    wall = wall_before + time.perf_counter() - session_start
    session = time.perf_counter() - session_start
    if main_proc:
        encoder = net.encoder
        meta = {
            "method": cfg.method,
            "mask": cfg.mask.kind if not supervised else None,
            "config": to_dict(cfg),
            "steps": step,
            "wall_time_s": round(wall, 2),
            "device": describe(device),
            "world_size": dist.world_size,
            "data": str(cfg.data.path),
            "fill_value": cfg.data.fill_value,
            "git_commit": commit,
            "run_dir": str(run_dir),
            **({"classes": classes} if supervised else {}),
        }
        save_encoder(run_dir / "encoder.pt", encoder, enc_name, enc_kwargs, meta)
        write_summary(
            run_dir / "summary.json",
            {
                "method": cfg.method,
                "mask": meta["mask"],
                "steps": step,
                "final": last_row,
                "wall_time_s": round(wall, 2),
                "img_per_s": round(
                    (step - start_step) * cfg.train.batch_size / max(session, 1e-9), 2
                ),
                "device": describe(device),
                "world_size": dist.world_size,
                "amp": "bf16" if bf16 else "fp32",
                "skipped_images": skipped_total,
                "git_commit": commit,
            },
        )
    return run_dir


if __name__ == "__main__":  # python -m pretrain.train / torchrun -m pretrain.train
    from pretrain.errors import CebenchError

    parser = get_args_parser()
    parser.prog = "python -m pretrain.train"
    try:
        sys.exit(main(parser.parse_args()))
    except CebenchError as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        sys.exit(2)
