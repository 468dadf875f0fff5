"""The kernels of one configuration's training step (torch.profiler): what to fuse next.

    python -m cebench.benchmarks.profile_step --config paper-inpainting --device cuda
    python -m cebench.benchmarks.profile_step --config paper-alexnet --device cuda --set train.cuda_graph=on
    python -m cebench.benchmarks.profile_step --config small --batch-size 4 --steps 1   # CPU, seconds

Builds the configuration's Trainer as `cebench speed` does (synthetic JPEGs at twice the load
size), takes its warm-up steps untimed (for `train.cuda_graph=on`, until the graph is captured),
then profiles `--steps` steps of `Trainer.train_step` on one preloaded batch. Prints the operators
with the most self time on the device (on the CPU: CPU time), with their calls per step, and one
summary line: device kernels (CPU: operators) per step, and the share of the step's device time
spent in kernels shorter than 10 us, the "many small kernels" a graph or a fused kernel removes.
benchmarks/gpu_check.sh runs it on a GPU (benchmarks/README.md "GPU").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

SMALL_US = 10.0


def get_args_parser() -> argparse.ArgumentParser:
    from cebench.benchmarks.speed_steps import CONFIGS

    p = argparse.ArgumentParser(description="Profile one configuration's training step.")
    p.add_argument("--config", default="paper-inpainting", choices=sorted(CONFIGS))
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--rows", type=int, default=25, help="operators shown")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> int:
    """Profile and print; a bad argument is a one-line error (exit 2), as in the `cebench` CLI."""
    from cebench.core.errors import CebenchError

    args = get_args_parser().parse_args(argv)
    try:
        return profile_step(args)
    except CebenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def profile_step(args: argparse.Namespace) -> int:
    from torch.profiler import ProfilerActivity, profile

    from cebench.benchmarks.speed_steps import _config, _Repeat, _sync, write_images
    from cebench.core.device import pick_device
    from cebench.core.distributed import DistInfo
    from cebench.core.errors import ConfigError
    from cebench.pretrain.methods.context_encoder import GraphedStep
    from cebench.pretrain.trainer import Trainer, resolve_run

    if args.steps < 1 or args.warmup < 0 or args.rows < 1:
        raise ConfigError("--steps and --rows must be >= 1 and --warmup >= 0")
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="cebench-profile-") as tmp:
        work = Path(tmp)
        probe = _config(args.config, work / "none", work / "run", args.batch_size, args.device)
        b, load = probe.train.batch_size, probe.data.load_size or probe.model.input_size
        write_images(work / "images", max(2 * b, 16), round(load * 2), round(load * 1.5))
        cfg = _config(
            args.config, work / "images", work / "run", args.batch_size, args.device, args.overrides
        )
        trainer = Trainer(resolve_run(cfg, DistInfo()), device, DistInfo())
        trainer.pending, trainer.skipped_local = [], 0
        images, labels, _ = next(iter(trainer._loader()))
        batch = _Repeat((images, labels, 0))
        graphed = isinstance(trainer.step_fn, GraphedStep)
        for _ in range(args.warmup):
            trainer.train_step(batch)
        while graphed and trainer.step_fn.graph is None:
            trainer.train_step(batch)
        _sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(args.steps):
                trainer.train_step(batch)
            _sync(device)
        trainer.pending.clear()
    on_device = device.type == "cuda"
    sort = "self_cuda_time_total" if on_device else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    print(summarize(prof.events(), on_device, args.steps, args.config, graphed))
    return 0


def summarize(events, on_device: bool, steps: int, config: str, graphed: bool) -> str:
    """Kernels (device) or operators (CPU) per step, and the time share of those under SMALL_US."""
    if on_device:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        times = [e.device_time for e in kernels]  # us
        what = "device kernels"
    else:
        kernels = [e for e in events if e.name.startswith("aten::")]
        times = [e.self_cpu_time_total for e in kernels]
        what = "aten operators"
    total = sum(times) or 1e-9
    small = sum(t for t in times if t < SMALL_US)
    return (
        f"{config} ({'graph' if graphed else 'eager'}): {len(kernels) / steps:.0f} {what} per "
        f"step, {total / steps / 1000:.2f} ms of their time per step, "
        f"{100 * small / total:.1f}% of it in ones under {SMALL_US:g} us"
    )


if __name__ == "__main__":
    raise SystemExit(main())
