"""`cebench speed`: how fast the suite pretrains, loads data and evaluates, vs a plain reference.

    cebench speed                                   # both paper configurations, table on stdout
    cebench speed --json                            # + one final JSON line (keys below)
    cebench speed --configs paper-inpainting --steps 5 --warmup 1
    cebench speed --threads 1                       # stable ratios on a shared, busy CPU
    cebench speed --json --steps 1 --warmup 0 --configs small --batch-size 4   # seconds (tests)
    cebench speed --configs none --photos --workdir /tmp/speed   # camera-sized photo folder
    cebench speed --configs none --contention                    # a competing process (minutes)

For each configuration (named pretraining configs: "paper-inpainting" = 128 px, batch 64, 4000-d
bottleneck, joint loss; "paper-alexnet" = 227 px AlexNet, random-region masks; "small" = the
64 px small-dcgan config) it measures, in one process:

- ours: full training steps (masks, discriminator and generator forward, backward, Adam) through
  `cebench.pretrain.trainer.Trainer.train_step`, the code `cebench pretrain` runs, with the config's own
  precision/layout options (resolved `train.amp`);
- plain: the same step written plainly (`cebench.benchmarks.plain_reference.PlainStep`: eager fp32, masks
  per sample in a Python loop on the CPU, default layouts, default Adam), from the same initial
  weights on the same batch. Repetitions alternate ours / plain so machine noise hits both; the
  ratio is the median of the per-repetition ratios plain_time / ours_time;
- data: the training DataLoader (default workers) + on-device masks and hole filling, alone;
- transfer: frozen feature extraction (`cebench.transfer.features.compute_features`) and the linear probe
  on cached features (`cebench.transfer.classify.train_linear_probe`);
- peak memory of a step (CUDA: max_memory_allocated; CPU: the process's peak RSS, VmHWM, reset
  before each step) and FLOPs per step (FlopCounterMode); its TFLOP/s as a fraction of this
  device's bf16 and fp32 matmul peak, measured in the same run (one large square matmul).

--photos: the `small` config on camera-sized files (6 JPEGs 4000x3000 with sensor-like noise, 2
PNGs 2560x1600; written once into --workdir): its training rate against the training DataLoader
with the default workers decoding them at full size (plain), in JPEG draft mode (draft: what
training does), from `cebench data prepare`'s copy at the load size (prepared), and with
`data.decode: device` (device: the workers read bytes, --device decodes the JPEGs and resizes,
crops and flips the batch; the PNGs go through the workers), and the copy's own cost.
`--set train.cuda_graph=on` / `--set data.decode=device` measure the configurations' step as one
CUDA graph / their data path decoded on the device. --contention: `cebench pretrain` (small config) alone and with a second one
competing for the CPUs, for the automatic thread count and one thread, each with passive and
with OpenMP's default wait policy (cebench.core.threads).

Images are synthetic (smooth random JPEGs, 2 x 1.5 times the config's load size, so the data path
decodes and resizes as on real photos), written to a temporary directory: nothing is downloaded.

JSON (last line with --json): {"date", "device", "torch", "threads", "git_commit", "overrides",
"configs": {NAME: {"batch_size", "input_size", "amp", "channels_last", "steps", "ours_step_s",
"plain_step_s", "ours_img_per_s", "plain_img_per_s", "ratio", "loss_ours", "loss_plain",
"flops_per_step", "ours_tflops", "ours_peak_mem_gib", "plain_peak_mem_gib", "mem_kind",
"data_workers", "data_img_per_s", "data_over_train", "features_img_per_s", "probe_images",
"probe_epochs", "probe_s", "compile_s", "compiled_step_s", "compiled_speedup", "of_bf16_peak",
"of_fp32_peak", "cuda_graph", "decode", "wall_100k_h"}}}, with "matmul_peak_tflops": {"n",
"reps", "bf16", "fp32"}, "photos" (--photos) and "contention" (--contention) beside "configs".
Times are seconds, memory GiB; null where not measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# the three studies, one module each; their names are read here and by the tests as `speed.X`
from cebench.benchmarks.speed_contention import (  # noqa: F401
    CONTENTION_STEPS,
    _pretrain_argv,
    _seconds_per_step,
    format_contention,
    measure_contention,
)
from cebench.benchmarks.speed_photos import format_photos, measure_photos, write_photos  # noqa: F401
from cebench.benchmarks.speed_steps import (  # noqa: F401
    CONFIGS,
    CPU_MEMORY_LIMIT_GIB,
    DEFAULT_CONFIGS,
    format_table,
    measure_config,
    measure_peak,
    write_images,
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training / data / transfer throughput of the suite vs a plain reference step.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        choices=[*sorted(CONFIGS), "none"],
        help="configurations for the main table (none: only the cases below)",
    )
    p.add_argument(
        "--photos",
        action="store_true",
        help="also the photo-folder case: 4000x3000 JPEGs and large PNGs, the small config's "
        "training rate vs data loading plain / draft / prepared",
    )
    p.add_argument(
        "--contention",
        action="store_true",
        help="also the slowdown of a cebench pretrain run (small config) with a second one "
        "competing for the CPUs (subprocesses, a few minutes)",
    )
    p.add_argument(
        "--workdir",
        help="keep the generated images here between runs (default: a temporary folder)",
    )
    p.add_argument(
        "--steps", type=int, default=2, help="timed repetitions (each: 1 ours + 1 plain step)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each before timing")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    p.add_argument(
        "--compile",
        action="store_true",
        help="A/B: also time ours with every network compiled (torch.compile, inductor), "
        "interleaved; compile time reported apart",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a pretraining config key of every configuration measured (repeatable), "
        "e.g. data.workers=8, train.channels_last=true",
    )
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    p.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: CPUs // jobs, cebench.core.threads); "
        "1 gives stable ratios on a busy machine",
    )
    return p


WORKDIR_MARK = ".cebench-speed"


def _own_workdir(workdir: Path) -> None:
    """Create --workdir, or accept an existing one only if empty or made by `cebench speed`
    (its mark file): speed deletes and rewrites its run folders there, and never a file it did
    not write."""
    from cebench.core.errors import ConfigError

    try:
        if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / WORKDIR_MARK).is_file():
            raise ConfigError(
                f"--workdir {workdir}: holds files cebench speed did not write; choose a new or "
                "empty folder (speed replaces its run folders there)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / WORKDIR_MARK).touch()
    except FileExistsError:
        raise ConfigError(f"--workdir {workdir}: is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"--workdir {workdir}: {e.strerror or e}") from None


def main(args: argparse.Namespace) -> int:
    from cebench.core.device import describe, pick_device
    from cebench.core.errors import ConfigError
    from cebench.core.provenance import git_commit

    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(
            f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}"
        )
    for flag in ("batch_size", "threads", "probe_epochs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    from cebench.core.threads import set_threads, threads_note

    device = pick_device(args.device)
    configs = [c for c in args.configs if c != "none"]
    if not (configs or args.photos or args.contention):
        raise ConfigError("--configs none: nothing to measure (add --photos or --contention)")
    results: dict[str, dict[str, Any]] = {}
    photos = contention = None
    if args.workdir:
        _own_workdir(Path(args.workdir))
    # the data timings measure decoding, as a dataset larger than the decoded-file cache pays it
    # (cebench.data.images); the few files measured here would otherwise be decoded once
    os.environ.setdefault("CEBENCH_IMAGE_CACHE_MB", "0")
    set_threads(args.threads)  # after every check: the line below is the run's first
    if note := threads_note():
        print(note, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="cebench-speed-") as tmp:
        work = Path(args.workdir or tmp)
        peak = measure_peak(device) if configs else {}
        for name in configs:
            print(f"speed: {name} ...", file=sys.stderr, flush=True)
            results[name] = measure_config(name, args, work)
            for prec in ("bf16", "fp32"):
                if peak.get(prec):
                    results[name][f"of_{prec}_peak"] = round(
                        results[name]["ours_tflops"] / peak[prec], 4
                    )
        if args.photos:
            print("speed: photos ...", file=sys.stderr, flush=True)
            photos = measure_photos(args, work)
        if args.contention:
            print("speed: contention ...", file=sys.stderr, flush=True)
            contention = measure_contention(args, work)
    if results:
        print(format_table(results))
    if peak:
        print(
            f"matmul peak (one {peak['n']}x{peak['n']} matmul, best of {peak['reps']}): "
            f"bf16 {peak['bf16']:.3f} TFLOP/s, fp32 {peak['fp32']:.3f} TFLOP/s"
        )
    for name, r in results.items():
        if r["compile_s"] is not None:
            print(
                f"torch.compile ({name}): {r['compile_s']:.1f} s to compile, then "
                f"{r['compiled_step_s']:.3f} s/step vs {r['ours_step_s']:.3f} eager "
                f"(x{r['compiled_speedup']:.2f})"
            )
    if photos:
        print(format_photos(photos))
    if contention:
        print(format_contention(contention))
    for name, r in results.items():
        if device.type == "cpu" and r["ours_peak_mem_gib"] > CPU_MEMORY_LIMIT_GIB:
            print(f"note: {name} peaks at {r['ours_peak_mem_gib']:.1f} GiB RSS (> 8 GiB)")
    if args.json:
        out = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": describe(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "git_commit": git_commit(),
            "overrides": args.overrides,
            "configs": results,
            "matmul_peak_tflops": peak or None,
            "photos": photos,
            "contention": contention,
        }
        print(json.dumps(out))
    return 0
