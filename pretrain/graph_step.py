"""The context encoder's whole training step as one CUDA graph (`train.cuda_graph`).

    cebench pretrain --config paper-inpainting --data DIR --out runs/p train.cuda_graph=on

On a GPU the paper's step is many small kernels (benchmarks/README.md "GPU": 13-17 ms per batch of
64, 2-4% of the bf16 matmul peak), so the CPU's time to launch them is the first limit. A CUDA
graph records the launches once and replays them with one call. `GraphedStep` captures, for the
context encoder and the autoencoder: the masks (from their uniform draws), the hole filling, both
networks' forward and backward passes, the loss weights and both Adam updates. What stays outside
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
from cebench.pretrain.masks import check_shape_bank, mask_draw_shapes, masks_from_draws
from cebench.pretrain.methods.base import PretrainMethod
from cebench.pretrain.methods.context_encoder import ContextEncoder, context_encoder_step
from cebench.pretrain.train_data import _seed

GRAPH_MODES = ("off", "on", "auto")
WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's CUDA graph notes use 3)

StepFn = Callable[[torch.Tensor, Any, int], dict[str, torch.Tensor]]


def why_not_graphed(method: PretrainMethod, device: torch.device, dist: D.DistInfo) -> str | None:
    """Why this run's step cannot be one CUDA graph, or None when it can."""
    if device.type != "cuda":
        return f"no CUDA device (the run is on {device.type})"
    if dist.enabled:
        return f"{dist.world_size} processes (gradients are all-reduced between the passes)"
    if not isinstance(method, ContextEncoder):
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
            GraphedStep(method),
            f"train.cuda_graph={mode}: the training step is captured as one CUDA graph after "
            f"{WARMUP_STEPS} eager steps",
        )
    if mode == "auto" and device.type != "cuda":
        return method.step, None
    return method.step, f"train.cuda_graph={mode}: {why}; the eager step runs"


class GraphedStep:
    """`method.step` (a ContextEncoder) as static buffers + one captured graph (module doc).

    capture=False runs the same static-buffer step eagerly every time: what the CPU tests check
    against the eager `method.step`."""

    def __init__(
        self, method: ContextEncoder, capture: bool = True, warmup: int = WARMUP_STEPS
    ) -> None:
        cfg = method.cfg
        self.method, self.capture, self.warmup = method, capture, warmup
        self.device = method.device
        self.size = cfg.model.input_size
        self.batch = cfg.train.batch_size  # one process: the global batch
        if cfg.mask.kind == "random-region" and method.shapes is not None:
            check_shape_bank(method.shapes)  # a host sync: never inside the capture
        self.draw_shapes = mask_draw_shapes(
            cfg.mask.kind, self.batch, self.size, shapes=method.shapes
        )
        self.images: torch.Tensor | None = None
        self.draws: list[torch.Tensor] = []
        self.graph: Any = None
        self.out: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self.calls = 0
        # Adam's step count on the device, updated by the graph (fused Adam: same arithmetic)
        for opt in method.optims.values():
            for group in opt.param_groups:
                group["capturable"] = True

    def _body(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Everything after the draws: what the graph holds."""
        m, cfg = self.method, self.method.cfg
        hole = masks_from_draws(
            cfg.mask.kind,
            self.draws,
            self.batch,
            self.size,
            region=cfg.mask.region or self.size // 2,
            overlap=cfg.mask.overlap,
            coverage=cfg.mask.coverage,
            shapes=m.shapes,
            device=self.device,
        )
        metrics = context_encoder_step(
            m.parts,
            self.images,
            hole,
            m.fill,
            autoencoder=m.reconstruct_all,
            world_size=1,
            bf16=m.bf16,
        )
        return hole, metrics

    def _fill_inputs(self, images: torch.Tensor, step: int) -> None:
        """Copy the batch and the step's uniform draws into the static buffers."""
        seed = _seed(self.method.cfg.train.seed, step, 11)  # batch_masks' generator seed
        gen = torch.Generator(device=self.device).manual_seed(seed)
        fresh = [torch.rand(s, generator=gen, device=self.device) for s in self.draw_shapes]
        if self.images is None:
            self.images = torch.empty_like(images)
            self.draws = [torch.empty_like(d) for d in fresh]
        if images.shape != self.images.shape:
            raise RuntimeError(
                f"the graphed step needs batches of one shape: {tuple(self.images.shape)}, "
                f"then {tuple(images.shape)}"
            )
        self.images.copy_(images)
        for buf, d in zip(self.draws, fresh, strict=True):
            buf.copy_(d)

    def __call__(self, images: torch.Tensor, labels: Any, step: int) -> dict[str, torch.Tensor]:
        self._fill_inputs(images, step)
        if not self.capture:
            hole, metrics = self._body()
        elif self.calls < self.warmup:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                hole, metrics = self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            if self.graph is None:
                self.graph = torch.cuda.CUDAGraph()
                # thread_local: the DataLoader's pin-memory thread may call CUDA meanwhile
                with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                    self.out = self._body()
            self.graph.replay()  # the capture recorded the step without running it
            assert self.out is not None
            hole, metrics = self.out
        self.calls += 1
        self.method.hole = hole  # for the sample grid, read before the next step
        # the graph's outputs are overwritten by the next replay: the caller keeps copies
        return {k: v.clone() for k, v in metrics.items()}
