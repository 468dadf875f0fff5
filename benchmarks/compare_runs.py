"""How far apart two runs of the same cells are: per table column, the largest and the mean absolute
difference of the values both runs hold (same arm, task, metric and seed).

    python -m cebench.benchmarks.compare_runs results/default /tmp/default-2-threads
    python -m cebench.benchmarks.compare_runs A B --all-metrics     # every metric, not the table's

Use it to see what a change that the cell hash does not cover moves: another torch thread count
(`CEBENCH_THREADS`), another torch version, another machine. The columns are the table's
(`tables.build_columns`, in the table's units); pretraining time is left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from cebench.benchmarks.render import read_checked
from cebench.benchmarks.tables import build_columns


def differences(
    a: list[dict[str, Any]], b: list[dict[str, Any]], meta: dict[str, Any], all_metrics: bool
) -> list[tuple[str, int, float, float]]:
    """(column or metric, pairs, max |a - b|, mean |a - b|) for each column both runs hold."""
    key = lambda r: (r["arm"], r["task"], r["metric"], r["seed"])  # noqa: E731
    vb = {key(r): r["value"] for r in b}
    if all_metrics:
        groups = sorted({(r["task"], r["metric"]) for r in a if r["metric"] != "time_s"})
        columns = [(f"{t}:{m}", t, m, 1.0) for t, m in groups]
    else:
        columns = [
            (c.label, c.task, c.metric, c.scale)
            for c in build_columns(a, meta)
            if not c.paper and c.task != "pretrain"
        ]
    out = []
    for label, task, metric, scale in columns:
        diffs = [
            abs(r["value"] - vb[key(r)]) * scale
            for r in a
            if r["task"] == task and r["metric"] == metric and key(r) in vb
        ]
        if diffs:
            out.append((label, len(diffs), max(diffs), statistics.fmean(diffs)))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("a", help="a results folder (or results.csv)")
    p.add_argument("b", help="another run of the same cells")
    p.add_argument("--all-metrics", action="store_true", help="every metric, not the table's")
    return p


def main(argv: list[str] | None = None) -> int:
    from cebench.core.errors import CebenchError

    args = get_args_parser().parse_args(argv)
    try:
        a, meta = read_checked([Path(args.a)])
        b, _ = read_checked([Path(args.b)])
    except CebenchError as e:
        print(f"compare_runs: error: {e}", file=sys.stderr)
        return 2
    rows = differences(a, b, meta, args.all_metrics)
    if not rows:
        print("compare_runs: error: the two runs share no cell", file=sys.stderr)
        return 2
    print("| column | cells in both | max abs difference | mean abs difference |")
    print("|---|---|---|---|")
    for label, n, worst, mean in rows:
        print(f"| {label} | {n} | {worst:.3g} | {mean:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
