"""`cebench speed --contention` (benchmarks/speed.py), study 3: `cebench pretrain` alone and with
a second one competing for the CPUs, per thread count and OpenMP wait policy."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from cebench.benchmarks.speed_steps import CONFIGS, _config, write_images

# ----- a competing process
CONTENTION_STEPS = (10, 30)  # the measured run's steps: timed from the first to the second


def _pretrain_argv(data: Path, out: Path, steps: int, log_every: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from cebench.cli import main; sys.exit(main(sys.argv[1:]))",
        "pretrain",
        "--config",
        CONFIGS["small"],
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--out",
        str(out),
        "train.sample_every=0",
        f"train.save_every={steps}",
        f"train.log_every={log_every}",
    ]


def _seconds_per_step(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["time"] for r in rows}
    a, b = CONTENTION_STEPS
    return (t[b] - t[a]) / (b - a)


def _one_run(data: Path, work: Path, env: dict[str, str], competitor: bool) -> tuple[float, str]:
    """(seconds per step of a measured `cebench pretrain` run, its 'threads:' line), alone or
    while a second identical run trains (started first, stopped when the measured one ends)."""
    import shutil
    import subprocess

    for d in ("measured", "competitor"):
        shutil.rmtree(work / d, ignore_errors=True)
    other = None
    if competitor:
        other = subprocess.Popen(
            _pretrain_argv(data, work / "competitor", 100_000, 1),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while not (work / "competitor" / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.5)  # training has started (one step logged)
    try:
        done = subprocess.run(
            _pretrain_argv(data, work / "measured", CONTENTION_STEPS[1], CONTENTION_STEPS[0]),
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        if other is not None:
            other.terminate()
            other.wait()
    if done.returncode != 0:
        raise RuntimeError(f"cebench pretrain failed: {done.stderr.strip()[-500:]}")
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("threads:")), "")
    return _seconds_per_step(work / "measured"), line


def measure_contention(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The `small` config's `cebench pretrain` (default workers) alone and with a second such
    run competing, for the thread choices x OpenMP wait policies below; alone and competing runs
    alternate, each variant `max(1, --steps // 2)` times; the slowdown is the median competing
    time over the median alone time (seconds per step between steps 10 and 30)."""
    probe = _config("small", workdir / "none", workdir / "none", None, "cpu")
    load = probe.data.load_size or probe.model.input_size
    data = workdir / f"images-{load}"
    if not data.is_dir():
        write_images(data, 2 * probe.train.batch_size, round(load * 2), round(load * 1.5))
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "CEBENCH_", "_CEBENCH"))
    }
    variants = {
        "auto threads, passive OpenMP (default)": {},
        "auto threads, OpenMP's default wait": {"CEBENCH_OMP_PASSIVE": "0"},
        "1 thread, passive OpenMP": {"CEBENCH_THREADS": "1"},
        "1 thread, OpenMP's default wait": {"CEBENCH_THREADS": "1", "CEBENCH_OMP_PASSIVE": "0"},
    }
    reps = max(1, args.steps // 2)
    out: dict[str, Any] = {"config": "small", "steps": list(CONTENTION_STEPS), "reps": reps}
    work = workdir / "contention"
    work.mkdir(parents=True, exist_ok=True)
    for name, extra in variants.items():
        env = {**base, **extra}
        alone, competing, line = [], [], ""
        for _ in range(reps):
            s, line = _one_run(data, work, env, False)
            alone.append(s)
            competing.append(_one_run(data, work, env, True)[0])
        a, c = statistics.median(alone), statistics.median(competing)
        out[name] = {
            "threads": int(line.split()[1]) if line else None,
            "alone_step_s": round(a, 4),
            "competing_step_s": round(c, 4),
            "slowdown": round(c / a, 2),
        }
    return out


def format_contention(r: dict[str, Any]) -> str:
    a, b = r["steps"]
    rows = [
        f"competing process: `cebench pretrain --config small-dcgan` alone vs with a second one "
        f"running, s/step over steps {a}-{b}, median of {r['reps']}\n",
        "| variant | threads | alone s/step | competing s/step | slowdown |",
        "|---|---|---|---|---|",
    ]
    for name, v in r.items():
        if isinstance(v, dict):
            rows.append(
                f"| {name} | {v['threads']} | {v['alone_step_s']:.3f} | "
                f"{v['competing_step_s']:.3f} | {v['slowdown']:.2f}x |"
            )
    return "\n".join(rows)
