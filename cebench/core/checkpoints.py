"""Training checkpoints that survive crashes: rotation, fallback to the previous one, RNG state.

    save_training_checkpoint(run_dir, state)        # checkpoint.pt (+ checkpoint.prev.pt)
    state, path = load_training_checkpoint(run_dir)  # newest one that loads
    truncate_metrics(run_dir / "metrics.jsonl", state["step"])

Writing: the new checkpoint is first written completely to `checkpoint.next.pt` (atomically, via
`cebench.core.io.atomic_save`); only then is `checkpoint.pt` renamed to `checkpoint.prev.pt`
and `checkpoint.next.pt` to `checkpoint.pt`. A failed write (full disk, no permission) therefore
changes nothing, and a crash between the renames leaves a complete `checkpoint.next.pt`, which
loading considers too. Loading takes the newest loadable of the three and names any file it had
to skip as corrupt.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cebench.core.errors import CheckpointError
from cebench.core.io import atomic_save, atomic_write_text, safe_load

TRAIN_CKPT_FORMAT = "cebench-pretrain-run/1"
CKPT, NEXT, PREV = "checkpoint.pt", "checkpoint.next.pt", "checkpoint.prev.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as weights-only-loadable data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` as the run's newest checkpoint, keeping the previous one as checkpoint.prev.pt.

    Raises CheckpointError (the previous checkpoint untouched) if the new one cannot be written."""
    run_dir = Path(run_dir)
    nxt, cur, prev = run_dir / NEXT, run_dir / CKPT, run_dir / PREV
    atomic_save({"format": TRAIN_CKPT_FORMAT, **state}, nxt)
    if cur.exists():
        os.replace(cur, prev)
    os.replace(nxt, cur)
    return cur


def load_training_checkpoint(
    run_dir: str | Path, map_location: str = "cpu"
) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of the run that loads; corrupt ones are reported on stderr and skipped.

    Raises CheckpointError if there is none or none loads."""
    run_dir = Path(run_dir)
    candidates = [run_dir / n for n in (CKPT, NEXT, PREV) if (run_dir / n).exists()]
    if not candidates:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from ({CKPT} missing)")
    best: tuple[dict[str, Any], Path] | None = None
    errors = []
    for path in candidates:
        try:
            state = safe_load(path, map_location)
            if not isinstance(state, dict) or state.get("format") != TRAIN_CKPT_FORMAT:
                raise CheckpointError(f"{path} is not a cebench training checkpoint")
        except CheckpointError as e:
            errors.append(str(e))
            print(f"warning: skipping checkpoint: {e}", file=sys.stderr)
            continue
        if best is None or state["step"] > best[0]["step"]:
            best = (state, path)
    if best is None:
        raise CheckpointError(f"{run_dir}: no checkpoint loads: " + "; ".join(errors))
    if errors:
        print(f"resuming from {best[1]} (step {best[0]['step']}) instead", file=sys.stderr)
    return best


def truncate_metrics(path: str | Path, step: int) -> int:
    """Drop metrics.jsonl lines after `step` (and a torn last line); returns the lines kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(kept)
