"""The one skeleton every transfer harness runs (the torchvision references' `main`, once).

    class Segment(Harness):            # transfer/segment.py
        task = "segment"
        def load_data(self, cfg): ...           # -> Splits(train, val, ...)
        def build(self, cfg, encoder, info, data, device): ...   # -> the model
        def fit(self, cfg, model, data, info, device, log): ...
        def evaluate(self, cfg, model, data, info, device): ...  # -> metrics
        def checkpoint(self, cfg, model, data, info): ...        # -> model.pt content
    run = Segment().run                 # run(cfg) -> the metrics.json record

`Harness.run` does, in this order and in no other place: validate the config, require `out`, seed,
pick the device, load the data, resolve the encoder (with the harness's calibration batch and
`cfg.rescale`, `cebench.transfer.encoders.resolve_encoder`), seed again, build, fit, evaluate and
save (model.pt, metrics.json, config.yaml). With `cfg.tensorboard` (the default) the run's
MetricLogger also writes TensorBoard event files into `out`: the training log, the numeric results
under `eval/` and the resolved config as text. Freezing a model's encoder is `FrozenEncoder`'s job.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from cebench.core.config import to_dict, validate
from cebench.core.device import pick_device
from cebench.core.errors import CebenchError, ConfigError
from cebench.core.io import atomic_save
from cebench.core.logger import MetricLogger
from cebench.core.threads import set_threads, threads_note
from cebench.transfer.encoders import EncoderInfo, resolve_encoder
from cebench.transfer.loop import freeze, set_seed, write_run


@dataclass
class Splits:
    """A harness's data: the training and evaluation sets and whatever else it needs."""

    train: Any
    val: Any
    format: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class FrozenEncoder(nn.Module):
    """Base of the transfer models that hold `self.encoder`: `freeze_encoder()` stops its
    gradients and keeps it in eval mode (fixed BatchNorm statistics) through every `train()`."""

    frozen: bool = False

    def freeze_encoder(self) -> None:
        freeze(self.encoder)
        self.frozen = True

    def train(self, mode: bool = True) -> FrozenEncoder:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self


def numeric_leaves(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics dict, keyed by their path (`{"a": {"b": 1}}` -> `a/b`);
    strings and lists (per-class values) are left out."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(numeric_leaves(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


class Harness:
    task: str = ""

    # ----- what each harness defines
    def load_data(self, cfg: Any) -> Splits:
        raise NotImplementedError

    def calibration(self, cfg: Any, data: Splits) -> Callable[[int], torch.Tensor] | None:
        """A function of the encoder's input size giving training images in [-1, 1] (for the
        data-dependent rescaling); None when the harness has none."""
        return None

    def rescale(self, cfg: Any) -> str:
        """The rescaling `resolve_encoder` applies (a harness may do it later itself)."""
        return cfg.rescale

    def log_total(self, cfg: Any) -> int | None:
        return cfg.epochs

    def build(
        self, cfg: Any, encoder: nn.Module, info: EncoderInfo, data: Splits, device: torch.device
    ) -> Any:
        raise NotImplementedError

    def fit(
        self,
        cfg: Any,
        model: Any,
        data: Splits,
        info: EncoderInfo,
        device: torch.device,
        log: MetricLogger,
    ) -> None:
        raise NotImplementedError

    def evaluate(
        self, cfg: Any, model: Any, data: Splits, info: EncoderInfo, device: torch.device
    ) -> dict[str, Any]:
        raise NotImplementedError

    def checkpoint(self, cfg: Any, model: Any, data: Splits, info: EncoderInfo) -> dict[str, Any]:
        """model.pt's content besides "task" and "encoder" (default: the model's weights)."""
        return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}

    # ----- the skeleton
    def run(self, cfg: Any, note: str | None = None) -> dict[str, Any]:
        """Train and evaluate; writes metrics.json, config.yaml, log.jsonl and model.pt under
        cfg.out. `note` (e.g. "--preset small is meant for this data") is printed once the data
        and the encoder are ready, or joins the one-line error when they are not."""
        validate(cfg)
        if not cfg.out:
            raise ConfigError("config key 'out' (--out) is required")
        out = Path(cfg.out)
        start = time.time()
        set_seed(cfg.seed)
        try:
            device = pick_device(cfg.device)
            data = self.load_data(cfg)
            encoder, info = resolve_encoder(
                cfg.encoder,
                cfg.input_size,
                self.calibration(cfg, data),
                cfg.seed,
                rescale=self.rescale(cfg),
                device=device,
            )
        except CebenchError as e:
            if note:
                raise type(e)(f"{e} ({note})") from None
            raise
        set_threads()  # CPUs this process may use / concurrent jobs (cebench.core.threads)
        for line in (note, threads_note()):
            if line:
                print(line, file=sys.stderr, flush=True)
        set_seed(cfg.seed)
        log = MetricLogger(
            out / "log.jsonl",
            total=self.log_total(cfg),
            desc=self.describe(cfg),
            tensorboard=cfg.tensorboard,
        )
        try:
            log.text("config", yaml.safe_dump(to_dict(cfg), sort_keys=False))
            model = self.build(cfg, encoder, info, data, device)
            self.fit(cfg, model, data, info, device, log)
            metrics = self.evaluate(cfg, model, data, info, device)
            log.scalars(log.last_step, prefix="eval", **numeric_leaves(metrics))
        finally:
            log.close()
        out.mkdir(parents=True, exist_ok=True)
        atomic_save(
            {"task": self.task, **self.checkpoint(cfg, model, data, info), "encoder": info.spec},
            out / "model.pt",
        )
        return write_run(out, self.task, metrics, cfg, info, device, start)

    def describe(self, cfg: Any) -> str:
        return self.task
