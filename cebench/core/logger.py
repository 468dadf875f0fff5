"""The project's one metric logger: a progress bar plus a metrics.jsonl file.

    log = MetricLogger(run_dir / "metrics.jsonl", total=cfg.steps, desc="pretrain", start=step)
    log.update(step, loss=0.12, img_per_s=340.0)   # one JSON line, bar postfix updated
    log.close()

Lines are appended and flushed one at a time, so a run killed mid-way leaves whole lines only
(a partial last line from a hard kill is skipped by `read_jsonl`).

When stderr is not a terminal (a log file, a pipe, a batch job) the bar is off and a plain
progress line goes to stderr instead, at most every `progress_every` seconds (default 30, or the
CEBENCH_PROGRESS_EVERY environment variable; the first after that long, so short runs stay quiet):

    pretrain context-encoder: step 1200/6400 (19%) | loss_rec 0.0123 | 612 img/s | eta 2m21s

`Heartbeat` does the same inside one long loop (the batches of a transfer epoch).

With `tensorboard=True` the same numbers also go to TensorBoard event files beside metrics.jsonl
(torch.utils.tensorboard's SummaryWriter, `tensorboard --logdir RUN_DIR`): each numeric metric a
scalar at its step, a string metric the tag's group (`layer="conv3", loss=0.4` -> `conv3/loss`),
plus `image(tag, hwc_uint8, step)` (the sample grids) and `text(tag, text)` (the resolved config).
A resumed run (`start > 0`) purges the events after `start` that the previous session left; a
run from step 0 purges all (an attempt killed before its first checkpoint starts again at 0).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cebench.core.errors import ConfigError

DEFAULT_PROGRESS_EVERY = 30.0


def progress_every_default() -> float:
    """Seconds between plain progress lines: CEBENCH_PROGRESS_EVERY, else 30."""
    from cebench.core.env import env_number

    return env_number("CEBENCH_PROGRESS_EVERY", DEFAULT_PROGRESS_EVERY)


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress_line(
    desc: str,
    step: int,
    total: int | None,
    rate: float | None,
    unit: str,
    metrics: dict[str, Any],
    noun: str = "step",
) -> str:
    """`desc: step 3/10 (30%) | loss 0.5 | 40 img/s | eta 1m10s` (rate in `unit`/s, per step for the eta)."""
    where = f"{noun} {step}/{total} ({100 * step / total:.0f}%)" if total else f"{noun} {step}"
    parts = [f"{desc}: {where}" if desc else where]
    parts += [f"{k} {_short(v)}" for k, v in metrics.items() if k not in ("img_per_s", "lr")]
    if rate is not None:
        parts.append(f"{rate:.4g} {unit}/s")
    return " | ".join(parts)


class Heartbeat:
    """Plain progress lines inside a long loop when stderr is not a terminal (see module doc).

    beat = Heartbeat("detect epoch 3", total=len(loader))
    for batch in loader:
        ...
        beat.tick(images=len(batch[0]), loss=loss.item())
    """

    def __init__(
        self, desc: str, total: int | None = None, every: float | None = None, stream=None
    ) -> None:
        self.desc, self.total = desc, total
        self.every = progress_every_default() if every is None else every
        self.stream = stream if stream is not None else sys.stderr
        self.on = not _isatty(self.stream)
        self.count = self.images = 0
        self._t0 = self._last = time.time()

    def tick(self, images: int = 0, **metrics: Any) -> None:
        self.count += 1
        self.images += images
        if not self.on:
            return
        now = time.time()
        if now - self._last < self.every:
            return
        self._last = now
        elapsed = max(now - self._t0, 1e-9)
        line = progress_line(
            self.desc, self.count, self.total, self.images / elapsed, "img", metrics, "batch"
        )
        if self.total:
            line += f" | eta {format_duration(elapsed / self.count * (self.total - self.count))}"
        print(line, file=self.stream, flush=True)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class MetricLogger:
    def __init__(
        self,
        path: str | Path | None,
        total: int | None = None,
        desc: str = "",
        start: int = 0,
        enabled: bool = True,
        progress_every: float | None = None,
        tensorboard: bool = False,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.desc, self.total, self._start = desc, total, start
        tty = _isatty(sys.stderr)
        # no terminal: plain lines instead of the bar (see the module docstring)
        self._plain = enabled and not tty
        self._every = progress_every_default() if progress_every is None else progress_every
        self.enabled = enabled
        self._tb = None  # first: a missing tensorboard package leaves nothing open
        if tensorboard and enabled and self.path is not None:
            # the steps this session writes (after `start`) are its own: a previous session's
            # events there are dropped, also from step 0 when an attempt that never reached its
            # first checkpoint left events behind
            self._tb = tensorboard_writer(self.path.parent, purge_step=start + 1 if start else 0)
        self._file = None
        if self.path is not None and enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1)
        self._bar = tqdm(
            total=total,
            initial=start,
            desc=desc,
            disable=not enabled or not tty,
            dynamic_ncols=True,
        )
        self._last = start
        self._t0 = self._printed = time.time()

    def update(self, step: int, **metrics: Any) -> None:
        """Record the metrics of `step` (a JSON line) and move the bar to `step`."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time() - self._t0, 3), **metrics}
        if self._file is not None:
            self._file.write(json.dumps(row, default=_jsonable) + "\n")
        self._bar.update(max(0, step - self._last))
        self._last = step
        self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        if self._tb is not None:
            self.scalars(step, **metrics)
        if self._plain:
            self._progress(step, metrics)

    def _progress(self, step: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        if now - self._printed < self._every:
            return
        self._printed = now
        elapsed, done = max(now - self._t0, 1e-9), max(step - self._start, 0)
        if "img_per_s" in metrics:
            rate, unit = float(metrics["img_per_s"]), "img"
        else:
            rate, unit = done / elapsed, "step"
        line = progress_line(self.desc, step, self.total, rate, unit, metrics)
        if self.total and done:
            line += f" | eta {format_duration(elapsed / done * (self.total - step))}"
        print(line, file=sys.stderr, flush=True)

    @property
    def last_step(self) -> int:
        """The step of the last `update` (the start step before any)."""
        return self._last

    def scalars(self, step: int, prefix: str = "", **metrics: Any) -> None:
        """TensorBoard scalars only (e.g. a run's final results, which metrics.json holds):
        numeric values at `step`, string values joined into the tag (see the module docstring)."""
        if self._tb is None:
            return
        group = "/".join(str(v) for v in metrics.values() if isinstance(v, str))
        group = "/".join(x for x in (prefix, group) if x)
        for k, v in metrics.items():
            v = v.item() if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"{group}/{k}" if group else k, v, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """An image ([H, W, 3] uint8, e.g. a sample grid) into TensorBoard at `step`."""
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """Text (shown verbatim: indented as a Markdown code block) into TensorBoard."""
        if self._tb is not None:
            self._tb.add_text(tag, "\n".join("    " + ln for ln in text.splitlines()), step)

    def write(self, msg: str) -> None:
        if self.enabled:
            tqdm.write(msg, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def tensorboard_writer(log_dir: str | Path, purge_step: int | None = None) -> Any:
    """torch.utils.tensorboard's SummaryWriter on `log_dir` (imported here: it loads the
    tensorboard package, a second or so, only for a run that writes events)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(
            f"TensorBoard logging needs the tensorboard package ({e}): pip install tensorboard, "
            "or turn it off (train.tensorboard=false for pretraining, tensorboard=false for a "
            "transfer run)"
        ) from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, skipping a torn last line."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows.append({k: (float("nan") if v == "nan" else v) for k, v in row.items()})
    return rows


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
