"""Score vs pretraining steps, from a study suite's results.csv (issue 12's steps curve).

    cebench bench --suite benchmarks/suites/default-steps.yaml --out results/default-study/steps
    python -m cebench.benchmarks.steps_curve results/default-study/steps   # -> .../steps_curve.png
    python -m cebench.benchmarks.steps_curve OUT1 OUT2 --out curve.png      # arms of both folders

Arms named `<series>-<steps>` (ce-400, ae-1600, ...) are points of the series `<series>`; an arm
without a step suffix (random) is drawn as a horizontal band (mean +- sample std over seeds).
Every point is the mean over seeds of the task's headline metric, error bars the sample std.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STEPS = re.compile(r"^(?P<series>.+)-(?P<steps>\d+)$")


def read_scores(csv_path: Path, task: str, metric: str = "score") -> dict[str, list[float]]:
    """arm -> the metric's value per seed."""
    out: dict[str, list[float]] = defaultdict(list)
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["task"] == task and row["metric"] == metric:
                out[row["arm"]].append(float(row["value"]))
    return dict(out)


def _mean_std(v: list[float]) -> tuple[float, float]:
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def plot(results: Path | list[Path], task: str, out: Path, metric: str = "score") -> Path:
    """Draw the curve of one or more results folders (an arm in several: the later one wins)."""
    folders = [results] if isinstance(results, Path) else list(results)
    scores: dict[str, list[float]] = {}
    for folder in folders:
        scores.update(read_scores(folder / "results.csv", task, metric))
    series: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    flat: dict[str, tuple[float, float]] = {}
    for arm, v in scores.items():
        m = _STEPS.match(arm)
        if m:
            series[m["series"]].append((int(m["steps"]), *_mean_std(v)))
        else:
            flat[arm] = _mean_std(v)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(series.items()):
        pts.sort()
        xs, ys, es = zip(*pts, strict=True)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    for name, (mean, std) in sorted(flat.items()):
        ax.axhline(mean, color="grey", ls="--", label=f"{name} (no pretraining)")
        ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
    ax.set_xscale("log")
    ticks = sorted({s for pts in series.values() for s, _, _ in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("pretraining steps (batch 32)")
    ax.set_ylabel(f"{task} {metric} (%)")
    ax.set_title(f"{task} vs pretraining steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "results", type=Path, nargs="+", help="`cebench bench` output folders (results.csv)"
    )
    p.add_argument("--task", default="cls-linear")
    p.add_argument("--metric", default="score")
    p.add_argument("--out", type=Path, default=None, help="default RESULTS/steps_curve.png")
    args = p.parse_args(argv)
    out = args.out or args.results[0] / "steps_curve.png"
    print(plot(args.results, args.task, out, args.metric))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
