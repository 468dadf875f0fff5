"""The project's one metric logger: a progress bar plus a metrics.jsonl file.

    log = MetricLogger(run_dir / "metrics.jsonl", total=cfg.steps, desc="pretrain", start=step)
    log.update(step, loss=0.12, img_per_s=340.0)   # one JSON line, bar postfix updated
    log.close()

Lines are appended and flushed one at a time, so a run killed mid-way leaves whole lines only
(a partial last line from a hard kill is skipped by `read_jsonl`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


class MetricLogger:
    def __init__(
        self,
        path: str | Path | None,
        total: int | None = None,
        desc: str = "",
        start: int = 0,
        enabled: bool = True,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = enabled
        self._file = None
        if self.path is not None and enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1)
        self._bar = tqdm(
            total=total,
            initial=start,
            desc=desc,
            disable=not enabled or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        self._last = start
        self._t0 = time.time()

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

    def write(self, msg: str) -> None:
        if self.enabled:
            tqdm.write(msg, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None


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
