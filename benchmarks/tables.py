"""Tables from results.csv: reading, merging, Markdown and LaTeX (`cebench table` is in `render.py`).

results.csv has a fixed schema, one row per arm x task x metric x seed:

    suite, arm, task, metric, seed, value, config_hash, code_version, device, wall_time_s,
    code_fingerprint, threads, precision

(config_hash is the cell hash: config, data spec, dependencies and code fingerprint; threads is
torch's intra-op thread count the cell ran with, precision its float format.) Each arm's mean of a
column is compared with the reference arm's by `stats.compare` (Welch's t-test, Holm-corrected):
the Markdown and LaTeX tables mark the arms that differ, and OUT/summary.csv holds the means,
p-values and intervals.

Table rows are the pretraining methods; columns are the pretraining time, each transfer task's
headline metric and (for the inpainting arms) inpainting L2 and PSNR, as mean +- sample standard
deviation over seeds; the best mean of each column is bold. The suite's labels, column order and
the paper's numbers come from suite.json beside results.csv (written by `cebench bench`).

A suite with `paper_inpainting` rows (the paper's Table 1) also gets an inpainting table in
table.md: those rows, then two rows per inpainting arm, one per reading of Table 1 (the hole of
the composited image; the whole predicted centre region of the raw prediction, as the released
test code), each with mean L1 %, mean L2 % and PSNR (mean of per-image values).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cebench.benchmarks.stats import ABOVE, BELOW, Comparison, compare, findings, footer
from cebench.core.errors import DatasetError
from cebench.core.io import atomic_write_text

COLUMNS = [
    "suite",
    "arm",
    "task",
    "metric",
    "seed",
    "value",
    "config_hash",
    "code_version",
    "device",
    "wall_time_s",
    "code_fingerprint",
    "threads",
    "precision",
]
# results.csv before the provenance columns (code fingerprint, torch threads, float format): read
# as such, the missing columns empty
LEGACY_COLUMNS = COLUMNS[:10]
FROM = "<<from>>"  # joins a `cebench table` command and the `cebench bench` command it re-renders
# `cebench inpaint` metrics: (column label, (metric, scale) tried in order, lower is better, digits);
# PSNR as the mean of per-image values, the most likely reading of the paper's Table 1
INPAINT_COLUMNS = [
    ("inpaint L2 (%)", (("l2_percent", 1.0), ("l2", 100.0)), True, 2),
    (
        "inpaint PSNR (dB)",
        (("psnr_mean_per_image_db", 1.0), ("psnr_db", 1.0), ("psnr", 1.0)),
        False,
        2,
    ),
]


def records_to_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cell records (OUT/cells/*.json) -> CSV rows; a pretraining cell also gives its time_s."""
    rows = []
    for rec in records:
        metrics = dict(rec.get("metrics") or {})
        if rec["kind"] == "pretrain":
            metrics.setdefault("time_s", rec["wall_time_s"])
        for name, value in metrics.items():
            rows.append(
                {
                    "suite": rec["suite"],
                    "arm": rec["arm"],
                    "task": rec["task"],
                    "metric": name,
                    "seed": rec["seed"],
                    "value": value,
                    "config_hash": rec["config_hash"],
                    "code_version": rec["code_version"],
                    "device": rec["device"],
                    "wall_time_s": rec["wall_time_s"],
                    "code_fingerprint": rec.get("code_fingerprint", ""),
                    "threads": rec.get("threads") or "",
                    "precision": rec.get("precision", ""),
                }
            )
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_results(paths: list[str | Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and merged suite metadata of several results dirs (or CSV files); later rows win
    over earlier ones with the same arm, task, metric and seed (whatever suite wrote them: a
    table has one value per seed, and `--reuse` gives another suite the same cells)."""
    rows: dict[tuple, dict[str, Any]] = {}
    meta: dict[str, Any] = {
        "arms": [],
        "tasks": [],
        "command": "",
        "names": [],
        "paper_inpainting": [],
        "reference": "",
        "alpha": 0.05,
    }
    for p in map(Path, paths):
        csv_path = p / "results.csv" if p.is_dir() else p
        if not csv_path.is_file():
            raise DatasetError(f"no results.csv at {csv_path}")
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames not in (COLUMNS, LEGACY_COLUMNS):
                raise DatasetError(f"{csv_path}: columns {reader.fieldnames} are not {COLUMNS}")
            for r in reader:
                for k in COLUMNS[len(LEGACY_COLUMNS) :]:
                    r.setdefault(k, "")
                r["seed"], r["value"] = int(r["seed"]), float(r["value"])
                r["wall_time_s"] = float(r["wall_time_s"])
                rows[(r["arm"], r["task"], r["metric"], r["seed"])] = r
        sj = csv_path.parent / "suite.json"
        if sj.is_file():
            m = json.loads(sj.read_text())
            meta["names"].append(m.get("name", ""))
            meta["command"] = meta["command"] or m.get("command", "")
            meta["reference"] = meta["reference"] or m.get("reference", "")
            meta["alpha"] = m.get("alpha", meta["alpha"])
            for key in ("arms", "tasks"):
                known = {x["name"] for x in meta[key]}
                meta[key] += [x for x in m.get(key, []) if x["name"] not in known]
            known = {x["label"] for x in meta["paper_inpainting"]}
            meta["paper_inpainting"] += [
                x for x in m.get("paper_inpainting", []) if x["label"] not in known
            ]
    rows_list = list(rows.values())
    _fill_meta(rows_list, meta)
    return rows_list, meta


def _fill_meta(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Arms and tasks seen in the CSV but not in any suite.json get default labels and metrics."""
    from cebench.transfer.tasks import headline_metrics

    arms = {a["name"] for a in meta["arms"]}
    tasks = {t["name"] for t in meta["tasks"]}
    for r in rows:
        if r["arm"] not in arms:
            arms.add(r["arm"])
            meta["arms"].append(
                {"name": r["arm"], "label": r["arm"], "paper": {}, "paper_time": ""}
            )
        if r["task"] not in tasks and r["task"] not in ("pretrain", "inpaint"):
            tasks.add(r["task"])
            names = [x["metric"] for x in rows if x["task"] == r["task"] and "@" not in x["metric"]]
            # the headline metric: the first of the registered tasks' present (`metrics` of
            # cebench.transfer.tasks.TransferTask), else the first metric
            metric = next(
                (m for m in headline_metrics() if m in names), names[0] if names else r["metric"]
            )
            meta["tasks"].append(
                {
                    "name": r["task"],
                    "label": r["task"],
                    "metric": metric,
                    "scale": 1.0,
                    "digits": 3,
                    "per_layer": False,
                }
            )


@dataclass
class Column:
    label: str
    task: str
    metric: str
    scale: float = 1.0
    lower_better: bool = False
    digits: int = 3
    paper: bool = False  # the paper's numbers: shown, never bolded


def values(rows: list[dict[str, Any]], arm: str, task: str, metric: str) -> list[float]:
    """One value per seed (sorted by seed)."""
    sel = sorted(
        (r for r in rows if r["arm"] == arm and r["task"] == task and r["metric"] == metric),
        key=lambda r: r["seed"],
    )
    return [r["value"] for r in sel]


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for a single seed."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def build_columns(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Column]:
    cols = []
    if any(r["task"] == "pretrain" and r["metric"] == "time_s" for r in rows):
        cols.append(
            Column("pretraining time (s)", "pretrain", "time_s", lower_better=True, digits=0)
        )
    if any(a.get("paper_time") for a in meta["arms"]):
        cols.append(Column("time (paper)", "pretrain", "paper_time", paper=True))
    for t in meta["tasks"]:
        cols.append(
            Column(
                # 'score' is each harness's headline metric: the task label names it
                t["label"] if t["metric"] == "score" else f"{t['label']} ({t['metric']})",
                t["name"],
                t["metric"],
                t.get("scale", 1.0),
                digits=t.get("digits", 1),
            )
        )
        if any(t["name"] in a.get("paper", {}) for a in meta["arms"]):
            cols.append(Column(f"{t['label']} (paper)", t["name"], "paper", paper=True, digits=1))
    present = {r["metric"] for r in rows if r["task"] == "inpaint"}
    for label, names, lower, digits in INPAINT_COLUMNS:
        name, scale = next(((n, s) for n, s in names if n in present), (None, 1.0))
        if name:
            cols.append(Column(label, "inpaint", name, scale, lower_better=lower, digits=digits))
    return cols


def comparisons(
    rows: list[dict[str, Any]], meta: dict[str, Any], reference: str | None = None
) -> list[Comparison]:
    """Each arm's columns against the reference arm (`stats.compare`)."""
    return compare(rows, meta, build_columns(rows, meta), values, reference)


def table_cells(
    rows: list[dict[str, Any]], meta: dict[str, Any], reference: str | None = None
) -> tuple[list[Column], list[list[str]], list[list[bool]]]:
    """Formatted cells (one list per arm, with the significance marker against the reference
    arm) and which of them are the best of their column."""
    cols = build_columns(rows, meta)
    signs = {
        (c.arm, c.task, c.metric): c.sign for c in compare(rows, meta, cols, values, reference)
    }
    text, means = [], []
    for arm in meta["arms"]:
        t_row, m_row = [], []
        for c in cols:
            if c.paper:
                v = (
                    arm.get("paper_time")
                    if c.metric == "paper_time"
                    else arm.get("paper", {}).get(c.task)
                )
                t_row.append(
                    "-"
                    if v in (None, "")
                    else (f"{v:.{c.digits}f}" if isinstance(v, (int, float)) else str(v))
                )
                m_row.append(None)
                continue
            xs = values(rows, arm["name"], c.task, c.metric)
            if not xs:
                t_row.append("-")
                m_row.append(None)
                continue
            m, s = mean_std([x * c.scale for x in xs])
            sign = signs.get((arm["name"], c.task, c.metric), "")
            t_row.append(
                f"{m:.{c.digits}f}"
                + ("" if s is None else f" ± {s:.{c.digits}f}")
                + (f" {sign}" if sign else "")
            )
            m_row.append(m)
        text.append(t_row)
        means.append(m_row)
    best = [[False] * len(cols) for _ in meta["arms"]]
    for j, c in enumerate(cols):
        col = [r[j] for r in means if r[j] is not None and not math.isnan(r[j])]
        if not col or c.paper:
            continue
        target = min(col) if c.lower_better else max(col)
        for i, r in enumerate(means):
            best[i][j] = r[j] is not None and round(r[j], c.digits) == round(target, c.digits)
    return cols, text, best


# Table 1's two readings: (reading, (l1 %, l2 %, PSNR) metric names of `cebench inpaint`)
INPAINT_READINGS = [
    ("hole, composited", ("l1_percent", "l2_percent", "psnr_mean_per_image_db")),
    (
        "whole region, raw",
        (
            "region_raw_l1_percent",
            "region_raw_l2_percent",
            "region_raw_psnr_mean_per_image_db",
        ),
    ),
]


def inpainting_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Markdown lines of the Table 1 comparison (empty without the paper's rows)."""
    paper = meta.get("paper_inpainting") or []
    if not paper:
        return []
    lines = [
        "Inpainting, the paper's Table 1 (Paris StreetView, 100 test images, centre region) beside "
        "ours; PSNR = mean of per-image PSNR",
        "",
        "| method | reading | mean L1 (%) | mean L2 (%) | PSNR (dB) |",
        "|---|---|---|---|---|",
    ]
    for r in paper:
        lines.append(
            f"| {r['label']} | paper | {r['l1_percent']:.2f} | {r['l2_percent']:.2f} "
            f"| {r['psnr_db']:.2f} |"
        )
    for arm in meta["arms"]:
        for reading, names in INPAINT_READINGS:
            cells = []
            for name in names:
                xs = values(rows, arm["name"], "inpaint", name)
                if not xs:
                    cells.append("-")
                    continue
                m, s = mean_std(xs)
                cells.append(f"{m:.2f}" + ("" if s is None else f" ± {s:.2f}"))
            if any(c != "-" for c in cells):
                lines.append(f"| {arm['label']} | {reading} | " + " | ".join(cells) + " |")
    return lines + [""]


def _seeds_note(rows: list[dict[str, Any]]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    return (
        f"mean ± sample std (n-1) over {len(seeds)} seed(s) {seeds}; best mean per column in bold; "
        "scores in %"
    )


def provenance_note(rows: list[dict[str, Any]]) -> str:
    """The torch thread counts and float formats the cells ran with (results differ slightly
    across thread counts)."""
    threads = sorted({str(r.get("threads") or "not recorded") for r in rows})
    formats = sorted({str(r.get("precision") or "not recorded") for r in rows})
    return (
        f"torch threads per cell: {', '.join(threads)}; float format: {', '.join(formats)} "
        "(another thread count gives slightly different numbers)"
    )


def render_markdown(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    command: str = "",
    reference: str | None = None,
) -> str:
    cols, text, best = table_cells(rows, meta, reference)
    lines = []
    if command:
        lines += [
            "Produced by: "
            + " from the results of ".join(f"`{c}`" for c in command.split(f" {FROM} ")),
            "",
        ]
    lines.append("| pretraining | " + " | ".join(c.label for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for arm, t_row, b_row in zip(meta["arms"], text, best, strict=True):
        cells = [f"**{t}**" if b else t for t, b in zip(t_row, b_row, strict=True)]
        lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
    lines += ["", _seeds_note(rows), ""]
    if note := footer(meta, reference):
        lines += [note, ""]
    lines += [provenance_note(rows), ""]
    if found := findings(comparisons(rows, meta, reference), meta):
        lines += ["Each column against the reference arm (the markers above):", "", *found, ""]
    lines += inpainting_table(rows, meta)
    return "\n".join(lines)


def _tex(s: str) -> str:
    s = s.replace("\\", "\0")  # backslashes first, so the braces added below stay intact
    for a, b in (
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        s = s.replace(a, b)
    s = s.replace("\0", r"\textbackslash{}")
    s = s.replace(ABOVE, r"$\uparrow$").replace(BELOW, r"$\downarrow$")
    return s.replace("±", r"$\pm$").replace("<", r"$<$")


def render_latex(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    command: str = "",
    reference: str | None = None,
) -> str:
    """A plain booktabs tabular (no jinja2 needed); the significance footer as a comment."""
    cols, text, best = table_cells(rows, meta, reference)
    out = []
    if command:
        out.append("% produced by: " + command.replace(f" {FROM} ", " from the results of "))
    out += [
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        "pretraining & " + " & ".join(_tex(c.label) for c in cols) + r" \\",
        r"\midrule",
    ]
    for arm, t_row, b_row in zip(meta["arms"], text, best, strict=True):
        cells = [
            rf"\textbf{{{_tex(t)}}}" if b else _tex(t) for t, b in zip(t_row, b_row, strict=True)
        ]
        out.append(_tex(arm["label"]) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if note := footer(meta, reference):
        out.append("% " + note.replace(ABOVE, "up arrow").replace(BELOW, "down arrow"))
    out += ["% " + provenance_note(rows), ""]
    return "\n".join(out)


SUMMARY_COLUMNS = [
    "arm", "column", "task", "metric", "n", "mean", "std", "reference", "n_reference", "diff",
    "ci95_low", "ci95_high", "p_welch", "p_holm", "significant",
]  # fmt: skip


def write_summary(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    path: str | Path,
    reference: str | None = None,
) -> None:
    """OUT/summary.csv: per arm and column, the mean over seeds and the test against the
    reference arm (significant: 'above', 'below' or '')."""
    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for c in comparisons(rows, meta, reference):
        w.writerow(
            {
                "arm": c.arm, "column": c.label, "task": c.task, "metric": c.metric, "n": c.n,
                "mean": num(c.mean), "std": num(c.std), "reference": c.reference,
                "n_reference": c.n_ref, "diff": num(c.diff), "ci95_low": num(c.ci_low),
                "ci95_high": num(c.ci_high), "p_welch": num(c.p), "p_holm": num(c.p_holm),
                "significant": {ABOVE: "above", BELOW: "below"}.get(c.sign, ""),
            }
        )  # fmt: skip
    atomic_write_text(path, buf.getvalue())
