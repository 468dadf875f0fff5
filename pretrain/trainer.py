"""The pretraining run behind `cebench pretrain`: set up, train, checkpoint, resume, finish.

    from cebench.pretrain.config import load_pretrain_config
    from cebench.pretrain.trainer import run
    run_dir = run(load_pretrain_config("small", ["data.path=data/builtin/unlabelled", "train.out=runs/ce"]))

`run(cfg)` joins the torchrun process group if there is one, builds a `Trainer` and returns the
run directory. Each method (its networks, step and flags) is one file of `cebench.pretrain.methods`;
checkpoint files in `cebench.core.checkpoints`; data order in `cebench.pretrain.train_data`. What a run guarantees:
- resuming (cfg.train.resume) continues bit-exactly: weights, optimizer states, RNG states and the
  step are restored, and the data order, augmentation and masks are functions of (seed, step);
- SIGINT/SIGTERM finish the current step, save a checkpoint and raise `TrainingInterrupted`;
- a non-finite loss raises `TrainingError` (checked when metrics are copied to the host, always
  before a checkpoint is written, so a checkpoint never holds NaN weights);
- a failed checkpoint write raises `CheckpointError` and leaves the previous checkpoint as it was;
- only process 0 writes files.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.core import distributed as D
from cebench.core.checkpoints import (
    CKPT,
    NEXT,
    PREV,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
    truncate_metrics,
)
from cebench.core.config import to_dict
from cebench.core.device import describe, pick_device
from cebench.core.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from cebench.core.io import atomic_write_text
from cebench.core.logger import MetricLogger
from cebench.core.provenance import git_commit
from cebench.core.threads import data_worker_init, default_workers, set_threads, threads_note
from cebench.data import ImageFolderDataset
from cebench.data.images import set_max_pixels
from cebench.data.layout import pretrain_images
from cebench.pretrain.config import (
    RELEASED_MEAN_RGB,
    PretrainConfig,
    check_consistency,
    resumed_config,
    saved_config,
)
from cebench.pretrain.device_data import DecodingLoader, device_loader
from cebench.pretrain.encoder_file import save_encoder
from cebench.pretrain.graph_step import choose_step
from cebench.pretrain.methods import get_method
from cebench.pretrain.monitor import OnlineProbe
from cebench.pretrain.samples import save_grid
from cebench.pretrain.train_data import StepBatchSampler, TrainImages, collate, dataset_mean


class TrainingInterrupted(Exception):
    """Raised by `run` after a signal stopped training and the checkpoint was saved."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        super().__init__(
            f"stopped by signal {signum} at step {step}; checkpoint saved in {run_dir}"
        )
        self.signum, self.step, self.run_dir = signum, step, run_dir

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


class SignalFlag:
    """SIGINT/SIGTERM set a flag instead of killing the process; the loop stops after the step.
    A second signal raises KeyboardInterrupt at once."""

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
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _worker_error(e: Exception) -> DatasetError:
    """A DatasetError re-raised from a DataLoader worker carries the worker's traceback: keep the
    last line (the message naming the image)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else str(e)
    prefix = "cebench.core.errors.DatasetError: "
    return DatasetError(last[len(prefix) :] if last.startswith(prefix) else last)


def next_batch(it: Any, step: int, last_saved: int) -> Any:
    """The next batch, with the two ways a data loader fails turned into one-line errors: an image
    that fails to decode (DatasetError naming it) and a worker process that died (killed, out of
    memory), which torch reports as a RuntimeError from its worker watchdog instead of hanging."""
    try:
        return next(it)
    except DatasetError as e:
        raise _worker_error(e) from None
    except (RuntimeError, ConnectionError, EOFError) as e:
        died = worker_death(e, step, last_saved)
        if died is None:
            raise
        stop_workers(it)
        raise died from None


def stop_workers(it: Any) -> None:
    """Shut a data-loader iterator's workers down now: until then torch's SIGCHLD handler keeps the
    dead worker registered and raises again at any later child's exit, far from here."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:  # noqa: BLE001 -- best effort: the run is stopping anyway
            pass


def worker_death(e: BaseException, step: int, last_saved: int) -> TrainingError | None:
    """The one-line TrainingError for an exception that means a data-loader worker died, else
    None. Torch reports a dead worker as a RuntimeError ("DataLoader worker ... killed by signal",
    "... exited unexpectedly"), from `next()` or from its SIGCHLD handler wherever the main process
    happens to be, and a worker killed while sending a batch as a ConnectionResetError/EOFError."""
    text = str(e).strip()
    if isinstance(e, RuntimeError) and "DataLoader worker" not in text:
        return None
    if not isinstance(e, (RuntimeError, ConnectionError, EOFError)):
        return None
    first = text.splitlines()[0] if text else type(e).__name__
    return TrainingError(
        f"a data-loader worker died at step {step} ({first}); the last "
        f"checkpoint (step {last_saved}) is kept: rerun with --resume, or data.workers=0 to "
        "load in the main process"
    )


def same_architecture(cfg: PretrainConfig, saved: dict[str, Any], run_dir: Path) -> None:
    """Resuming continues the checkpoint's networks: a config asking for another method or model
    (e.g. an AlexNet checkpoint in a tiny run) is refused, never trained as the checkpoint's."""
    old = saved_config(saved)

    def arch(c: PretrainConfig) -> dict[str, Any]:
        return {"method": c.method, **{f"model.{k}": v for k, v in to_dict(c.model).items()}}

    new_keys, old_keys = arch(cfg), arch(old)
    diff = [k for k in new_keys if new_keys[k] != old_keys.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {old_keys.get(k)} there, {new_keys[k]} asked" for k in diff[:3])
        raise ConfigError(
            f"{run_dir}: its checkpoint has another architecture ({shown}); resume it with its "
            "own config (no --config or model overrides) or choose another --out"
        )


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run's config with everything resolved before anything is built: on resume the
    checkpoint's saved config (its model preset and `_base_` chain already resolved when it was
    saved, only RUNTIME_KEYS taken from the new config), the method's checks passed, optim.lr
    filled in, and the training images listed, with data.fill_value (the images' mean, or the
    released one) decided from them.

        plan = resolve_run(cfg, dist)        # plan.cfg, plan.state, plan.data
        trainer = Trainer(plan, device, dist)

    The Trainer builds from it and never changes it (it works on its own copy of plan.cfg)."""

    cfg: PretrainConfig
    data: RunData  # the training images
    state: dict[str, Any] | None = None  # the checkpoint to continue, or None for a new run
    notes: tuple[str, ...] = ()  # said once every check has passed (Trainer.train)


@dataclasses.dataclass(frozen=True)
class RunData:
    """The training images of a run: paths, labels (methods that use them) and class names."""

    paths: tuple[str, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]
    signature: dict[str, Any]  # `images_signature`: kept in each checkpoint, checked on resume


def images_signature(paths: tuple[str, ...], root: str) -> dict[str, Any]:
    """The image count and a digest of the image list (paths relative to `root`, so a moved
    dataset folder keeps it), saved in each checkpoint: a resumed run says when they changed."""
    import hashlib
    import os

    rel = [os.path.relpath(p, root) if root else p for p in paths]
    digest = hashlib.sha256("\n".join(rel).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return {"count": len(paths), "digest": digest}


def resolve_data(cfg: PretrainConfig, dist: D.DistInfo) -> tuple[RunData, list[float] | None, str]:
    """(the training images, the hole fill value, a note on what a dataset root gave). The fill
    value is the config's when set (saved in the run's config, so a resumed run reuses it), else
    the released mean or the images' mean, computed on the main process and broadcast."""
    method_cls = get_method(cfg.method)
    fill_value = cfg.data.fill_value
    if method_cls.uses_labels:
        root = Path(cfg.data.path)
        folder = ImageFolderDataset(root / cfg.data.split if cfg.data.split else root)
        paths, labels, classes = [p for p, _ in folder.samples], folder.targets, folder.classes
        note = ""
    else:
        paths, note = pretrain_images(cfg.data.path, cfg.data.split)
        labels, classes = None, []
    if method_cls.uses_fill and fill_value is None:
        if cfg.data.fill == "released":
            fill_value = [round(v, 6) for v in RELEASED_MEAN_RGB]
        else:
            mean = (
                dataset_mean(
                    paths, cfg.data.fill_samples, cfg.data.load_size, cfg.data.skip_bad_images
                )
                if dist.is_main
                else None
            )
            fill_value = D.broadcast_object(mean)
    names = tuple(str(p) for p in paths)
    data = RunData(
        names,
        None if labels is None else tuple(labels),
        tuple(classes),
        images_signature(names, cfg.data.path),
    )
    return data, fill_value, note


def find_checkpoint(cfg: PretrainConfig, dist: D.DistInfo) -> dict[str, Any] | None:
    """The checkpoint of cfg.train.out to continue (None for a new run); a run there without
    --resume, or one of another architecture, is a ConfigError."""
    run_dir = Path(cfg.train.out)
    say = (lambda msg: print(msg, file=sys.stderr)) if dist.is_main else (lambda msg: None)
    if not any((run_dir / n).exists() for n in (CKPT, NEXT, PREV)):
        if cfg.train.resume:
            say(f"no checkpoint in {run_dir}: starting from step 0")
        return None
    if not cfg.train.resume:
        raise ConfigError(
            f"{run_dir} already holds a training run ({CKPT}); pass --resume to "
            "continue it or choose another --out"
        )
    state, path = load_training_checkpoint(run_dir)
    same_architecture(cfg, state["config"], run_dir)
    say(f"resuming {path} at step {state['step']} of {cfg.train.steps}")
    return state


def resolve_run(cfg: PretrainConfig, dist: D.DistInfo) -> RunPlan:
    """The run's resolved config and images (see `RunPlan`); the caller's `cfg` is never
    changed."""
    state = find_checkpoint(cfg, dist)
    cfg = resumed_config(cfg, state["config"]) if state is not None else copy.deepcopy(cfg)
    check_consistency(cfg)
    notes = []
    if cfg.optim.lr is None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.resolved_lr()))
        notes.append(
            f"optim.lr = {cfg.optim.lr:g} (the {cfg.method} default; set optim.lr to change it)"
        )
    data, fill_value, note = resolve_data(cfg, dist)
    if note:  # what a dataset root gave (its photos, never its label masks), or a warning
        notes.append(note)  # for a plain folder that mixes them: said once checks pass
    saved = (state or {}).get("images")
    if saved and saved != data.signature:
        notes.append(
            f"warning: the training images under {cfg.data.path} are not the ones this run "
            f"started with ({saved['count']} -> {len(data.paths)} images, or other files): "
            f"from step {state['step']} on it trains on the new list, in another order"
        )
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fill_value=fill_value))
    return RunPlan(cfg, data, state, tuple(notes))


def run(cfg: PretrainConfig) -> Path:
    """Run (or, with cfg.train.resume, continue) one pretraining job; returns the run directory.

    Raises TrainingInterrupted after SIGINT/SIGTERM (checkpoint saved), TrainingError on a
    non-finite loss (the last good checkpoint kept), CheckpointError if a checkpoint cannot be
    written (the previous one kept), DatasetError / ConfigError for bad input."""
    if not cfg.train.out:
        raise ConfigError("train.out (--out) is required: the run directory")
    device = pick_device(cfg.train.device)
    dist = D.init_from_env(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    trainer = None
    set_threads()  # CPUs this process may use / concurrent jobs (cebench.core.threads)
    old_limit = set_max_pixels(cfg.data.max_pixels)  # load_rgb's limit, in the loader workers too
    try:
        trainer = Trainer(resolve_run(cfg, dist), device, dist)
        return trainer.train()
    except (RuntimeError, ConnectionError, EOFError) as e:
        # a dead data-loader worker surfaces wherever the main process is, not only in next()
        died = (
            worker_death(e, trainer.step, trainer.last_saved)
            if trainer is not None and trainer.cfg.data.workers != 0
            else None
        )
        if died is None:
            raise
        stop_workers(getattr(trainer, "loader_iter", None))
        raise died from None
    finally:
        set_max_pixels(old_limit)
        if dist.enabled:
            D.shutdown()


class Trainer:
    """One run's state: config, data, networks, optimizers, step; `train()` runs it to the end."""

    def __init__(self, plan: RunPlan, device: torch.device, dist: D.DistInfo) -> None:
        """`plan`: a `resolve_run` result; the Trainer resolves nothing itself."""
        if not isinstance(plan, RunPlan):
            raise TypeError(f"Trainer takes resolve_run's RunPlan, not {type(plan).__name__}")
        # its own copy: nothing the Trainer does reaches the plan (or the caller's config)
        self.cfg = cfg = copy.deepcopy(plan.cfg)
        self.device, self.dist, self.main = device, dist, dist.is_main
        self.run_dir = Path(cfg.train.out)
        self.state = plan.state
        self.method_cls = get_method(cfg.method)
        self.supervised = self.method_cls.uses_labels
        self.start_step = self.step = self.last_saved = int(self.state["step"]) if self.state else 0
        self.notes: list[str] = list(plan.notes)  # said once every check has passed (train())
        self.classes = list(plan.data.classes)
        self.images_sig = plan.data.signature
        self.ds = TrainImages(
            list(plan.data.paths),
            None if plan.data.labels is None else list(plan.data.labels),
            size=cfg.model.input_size,
            load_size=cfg.data.load_size,
            crop=cfg.data.crop,
            flip=cfg.data.flip,
            skip_bad_images=cfg.data.skip_bad_images,
        )
        self._build_models()
        if self.state is not None:
            self._load_state(self.state)
        # after the load: a captured graph holds the optimizer states' addresses
        self.step_fn, note = choose_step(self.method, device, dist)
        if note:
            self.notes.append(note)
        self.bf16 = self.method.bf16
        self.commit = git_commit()
        self.wall_before = float(self.state["wall_time"]) if self.state else 0.0
        self.skipped_total = int(self.state.get("skipped_images", 0)) if self.state else 0
        self.state = None  # free the loaded tensors

    def say(self, msg: str) -> None:
        if self.main:
            print(msg, file=sys.stderr)

    # ----- setup
    def _build_models(self) -> None:
        cfg, device = self.cfg, self.device
        random.seed(cfg.train.seed)  # same seed on every process -> identical initial weights
        np.random.seed(cfg.train.seed % 2**32)
        torch.manual_seed(cfg.train.seed)
        self.method = self.method_cls(cfg, device, self.dist, self.classes)
        self.fmt = self.method.fmt
        self.net = self.method.models["net"]

    def _load_state(self, state: dict[str, Any]) -> None:
        for name, module in self.method.models.items():
            module.load_state_dict(state["models"][name])
        for name, opt in self.method.optims.items():
            opt.load_state_dict(state["optims"][name])
        rngs = state["rng"]  # one per process; a different process count gets process 0's
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])

    @property
    def loader_workers(self) -> int:
        """data.workers, or for -1 the count for this device (`default_workers`)."""
        w = self.cfg.data.workers
        return w if w >= 0 else default_workers(self.device.type)

    def _loader(self) -> torch.utils.data.DataLoader | DecodingLoader:
        cfg = self.cfg
        workers = self.loader_workers
        self.sampler = StepBatchSampler(
            len(self.ds),
            cfg.train.batch_size,
            cfg.train.seed,
            self.start_step,
            cfg.train.steps,
            self.dist.rank,
            self.dist.world_size,
        )
        kwargs = dict(
            batch_sampler=self.sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=data_worker_init if workers > 0 else None,
        )
        if cfg.data.decode == "device":  # workers read bytes; the device decodes
            return device_loader(self.ds, self.device, **kwargs)
        return torch.utils.data.DataLoader(
            self.ds, collate_fn=collate, pin_memory=self.device.type == "cuda", **kwargs
        )

    # ----- the loop
    def train(self) -> Path:
        cfg = self.cfg
        loader = self._loader()
        if note := threads_note():  # said with the other notes: every check has passed
            self.notes.append(note)
        for note in self.notes:
            self.say(note)
        self.probe = None
        if cfg.monitor.data and self.main:
            self.probe = OnlineProbe(
                cfg.monitor, cfg.model.input_size, cfg.data.load_size, cfg.train.steps
            )
            self.probe.load(self.method.encoder()[0], self.fmt)  # bad data fails before training
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            header = (
                f"# resolved cebench pretrain config\n# git commit: {self.commit or 'unknown'}\n"
            )
            import yaml

            config_text = header + yaml.safe_dump(to_dict(cfg), sort_keys=False)
            atomic_write_text(self.run_dir / "config.yaml", config_text)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.start_step)
        self.logger = MetricLogger(
            self.run_dir / "metrics.jsonl" if self.main else None,
            total=cfg.train.steps,
            desc=f"pretrain {cfg.method}",
            start=self.start_step,
            enabled=self.main,
            tensorboard=cfg.train.tensorboard,
        )
        if self.main:
            self.logger.text("config", config_text, self.start_step)
        self.session_start = time.perf_counter()
        self.tick = (self.session_start, self.start_step)
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.skipped_local, self.last_row, self.probe_row = 0, {}, {}
        try:
            with SignalFlag() as sig:
                it = self.loader_iter = iter(loader)
                while self.step < cfg.train.steps:
                    self.train_step(it)
                    stop = sig.signum is not None
                    if self.dist.enabled:  # every process stops at the same step
                        stop = D.any_process(stop, self.device)
                    save_due = (
                        self.step % cfg.train.save_every == 0
                        or self.step == cfg.train.steps
                        or stop
                    )
                    probe_due = self._probe()
                    if self.step % cfg.train.log_every == 0 or save_due or probe_due:
                        self._flush()
                    if save_due:
                        self._save()
                    if stop:
                        raise TrainingInterrupted(
                            sig.signum or signal.SIGTERM, self.step, self.run_dir
                        )
        finally:
            self.logger.close()
        if self.step > self.last_saved:  # nothing new when a finished run is resumed
            self._save()
        return self._finish()

    def train_step(self, it: Any) -> None:
        """Take the next batch from the loader iterator `it` and run one step of the method;
        its metrics join `self.pending` (copied to the host at the next log)."""
        cfg = self.cfg
        images, labels, n_bad = next_batch(it, self.step, self.last_saved)
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        self.skipped_local += n_bad
        m = self.step_fn(images, labels, self.step)
        self.step += 1
        self.pending.append((self.step, m))
        every = cfg.train.sample_every
        # the last step always writes one, so a run shorter than sample_every has a grid too
        if self.main and every and (self.step % every == 0 or self.step == cfg.train.steps):
            self._sample(images)

    def _probe(self) -> bool:
        """The online probe (`cebench.pretrain.monitor`) at its steps; True on every process at
        a probe step (its row is then logged at once, with the losses)."""
        m = self.cfg.monitor
        due = bool(m.data) and (self.step % m.every == 0 or self.step == self.cfg.train.steps)
        if due and self.probe is not None:
            self.probe_row = self.probe(self.method.encoder()[0], self.step, self.fmt)
        return due

    def _sample(self, images: torch.Tensor) -> None:
        """The method's sample grid (e.g. masked input / prediction / ground truth) into samples/."""
        rows = self.method.sample_rows(images)
        if rows is not None:
            grid = save_grid(self.run_dir / "samples" / f"step_{self.step:06d}.png", rows)
            self.logger.image("samples", grid, self.step)

    def _flush(self) -> None:
        """Copy pending metrics to the host once, stop on a non-finite loss, log the last step."""
        names = list(self.pending[0][1])
        vals = torch.stack([torch.stack([m[k].float() for k in names]) for _, m in self.pending])
        skipped = torch.tensor([float(self.skipped_local)], device=vals.device)
        if self.dist.enabled:
            vals, skipped = D.all_reduce_sum(vals) / self.dist.world_size, D.all_reduce_sum(skipped)
        vals = vals.cpu()
        for i, (s, _) in enumerate(self.pending):
            for j, k in enumerate(names):
                v = float(vals[i, j])
                if math.isnan(v) or math.isinf(v):
                    good = f"step {self.last_saved}" if self.last_saved else "none written yet"
                    raise TrainingError(
                        f"{k} became {v} at step {s}; training stopped. The last good checkpoint "
                        f"({self.run_dir / CKPT}, {good}) is kept; lower optim.lr or check the data"
                    )
        self.skipped_total += int(skipped.item())
        now = time.perf_counter()
        row: dict[str, Any] = {k: float(vals[-1, j]) for j, k in enumerate(names)}
        row["img_per_s"] = round(
            (self.step - self.tick[1]) * self.cfg.train.batch_size / max(now - self.tick[0], 1e-9),
            2,
        )
        row["lr"] = self.method.optims["net"].param_groups[0]["lr"]
        if self.skipped_total:
            row["skipped_images"] = self.skipped_total
        row.update(self.probe_row)
        self.probe_row = {}
        self.logger.update(self.step, **row)
        self.tick, self.pending, self.skipped_local, self.last_row = (now, self.step), [], 0, row

    def _save(self) -> None:
        rngs = D.gather_objects(rng_state())
        err = None
        if self.main:
            epoch, position = self.sampler.position(self.step)
            ckpt = {
                "step": self.step,
                "epoch": epoch,
                "position": position,
                "config": to_dict(self.cfg),
                "rng": rngs,
                "fill_value": self.cfg.data.fill_value,
                "world_size": self.dist.world_size,
                "models": {k: m.state_dict() for k, m in self.method.models.items()},
                "optims": {k: o.state_dict() for k, o in self.method.optims.items()},
                "wall_time": self.wall_before + time.perf_counter() - self.session_start,
                "skipped_images": self.skipped_total,
                "images": self.images_sig,
            }
            try:
                save_training_checkpoint(self.run_dir, ckpt)
            except CheckpointError as e:
                prev = (
                    f"the previous checkpoint ({self.run_dir / CKPT}, step {self.last_saved}) is intact"
                    if self.last_saved
                    else "no earlier checkpoint exists"
                )
                err = f"{e}; training stopped at step {self.step}, {prev}"
        err = D.broadcast_object(err)  # every process stops if process 0 could not write
        if err:
            raise CheckpointError(str(err))
        self.last_saved = self.step

    def _finish(self) -> Path:
        """encoder.pt and summary.json (process 0)."""
        cfg = self.cfg
        session = time.perf_counter() - self.session_start
        wall = self.wall_before + session
        if self.main:
            meta = {
                "method": cfg.method,
                **self.method.meta(),
                "config": to_dict(cfg),
                "steps": self.step,
                "wall_time_s": round(wall, 2),
                "device": describe(self.device),
                "world_size": self.dist.world_size,
                "data": str(cfg.data.path),
                "fill_value": cfg.data.fill_value,
                "git_commit": self.commit,
                "run_dir": str(self.run_dir),
            }
            encoder, name, kwargs = self.method.encoder()
            save_encoder(self.run_dir / "encoder.pt", encoder, name, kwargs, meta)
            import json

            summary = {
                "method": cfg.method,
                "mask": meta["mask"],
                "steps": self.step,
                "final": self.last_row,
                "wall_time_s": round(wall, 2),
                "img_per_s": round(
                    (self.step - self.start_step) * cfg.train.batch_size / max(session, 1e-9), 2
                ),
                "device": describe(self.device),
                "world_size": self.dist.world_size,
                "amp": "bf16" if self.bf16 else "fp32",
                "skipped_images": self.skipped_total,
                "git_commit": self.commit,
            }
            atomic_write_text(
                self.run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n"
            )
        return self.run_dir
