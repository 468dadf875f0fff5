"""The context encoder's whole training step as one CUDA graph (`train.cuda_graph`).

    cebench pretrain --config paper-inpainting --data DIR --out runs/p train.cuda_graph=on

On a GPU the paper's step is many small kernels (benchmarks/README.md "GPU": 13-17 ms per batch of
64, 2-4% of the bf16 matmul peak), so the CPU's time to launch them is the first limit. A CUDA
graph records the launches once and replays them with one call. A method that can be graphed
(`PretrainMethod.graphable`) builds its own graphed step (`graphed_step()`, in its own file);
this module chooses between it and the eager step. The context encoder's `GraphedStep`
(cebench.pretrain.methods.context_encoder) captures, for the context encoder and the
autoencoder: the masks (from their uniform draws), the hole filling, both networks' forward and
backward passes, the loss weights and both Adam updates. What stays outside
is what must change between replays without new launches: the batch is copied into a static input
buffer, and the masks' uniform draws are made by the step's seeded generator (seeded from
(train.seed, step) as `cebench.pretrain.masks.batch_masks` does) and copied into static buffers.
The captured kernels are the eager step's kernels on the same data, so the numbers are the eager
step's: tests/test_graph_step.py compares losses and weights after several steps (on the CPU with
the same static-buffer code run eagerly; tests/test_cuda.py with a captured graph on a GPU).

The first `WARMUP_STEPS` steps run eagerly on a side stream (they are real steps, as the eager
run's; CUDA needs them before a capture: cuDNN's algorithm choice, the optimizers' states), the
next one is captured and replayed, and every later one is a replay. The graph holds the addresses
of the parameters and optimizer states, so nothing may replace them afterwards (the Trainer never
does: it loads a checkpoint before the first step).

`train.cuda_graph`: "off" (default) is the eager step; "on" captures where a graph applies (a CUDA
device, one process, method context-encoder or autoencoder) and otherwise runs the eager step and
says why, once; "auto" does the same but falls back quietly when the device is not CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cebench.core import distributed as D

# a method is a cebench.pretrain.methods.PretrainMethod; not imported here, since the methods
# import this module (WARMUP_STEPS) and the methods package imports every method
PretrainMethod = Any

GRAPH_MODES = ("off", "on", "auto")
WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's CUDA graph notes use 3)

StepFn = Callable[[torch.Tensor, Any, int], dict[str, torch.Tensor]]


def why_not_graphed(method: PretrainMethod, device: torch.device, dist: D.DistInfo) -> str | None:
    """Why this run's step cannot be one CUDA graph, or None when it can."""
    if device.type != "cuda":
        return f"no CUDA device (the run is on {device.type})"
    if dist.enabled:
        return f"{dist.world_size} processes (gradients are all-reduced between the passes)"
    if not method.graphable:
        return f"method {method.name} has no graphed step (context-encoder and autoencoder do)"
    return None


def choose_step(
    method: PretrainMethod, device: torch.device, dist: D.DistInfo
) -> tuple[StepFn, str | None]:
    """(the step function for `train.cuda_graph`, the note to log once or None)."""
    mode = method.cfg.train.cuda_graph
    if mode == "off":
        return method.step, None
    why = why_not_graphed(method, device, dist)
    if why is None:
        return (
            method.graphed_step(),
            f"train.cuda_graph={mode}: the training step is captured as one CUDA graph after "
            f"{WARMUP_STEPS} eager steps",
        )
    if mode == "auto" and device.type != "cuda":
        return method.step, None
    return method.step, f"train.cuda_graph={mode}: {why}; the eager step runs"
