"""Figures of a benchmark run (matplotlib, Agg backend), drawn from results.csv and the run dirs.

    from cebench.benchmarks.figures import render_figures       # called by `cebench bench` / `cebench table`
    render_figures(rows, meta, [Path("results/default")], Path("results/default/figures"))

- bar_<task>.png     headline metric per pretraining method, mean with sample-std error bars
- per_layer_<task>.png  linear-probe score vs encoder layer, one line per method ("<metric>@<layer>")
- pretrain_loss.png  pretraining loss curves from each run's metrics.jsonl (one line per arm, seed)
- pretrain_probe.png the online probe's kNN top-1 during pretraining (`monitor.*` keys), likewise
- inpaint_<arm>.png  a grid of inpainting samples per masked arm (the run's samples/ or inpaint output)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cebench.benchmarks.tables import mean_std, values  # noqa: E402
from cebench.core.logger import read_jsonl  # noqa: E402
from cebench.pretrain.methods import get_method, list_methods  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def render_figures(
    rows: list[dict[str, Any]], meta: dict[str, Any], results_dirs: list[Path], out_dir: Path
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _cell_records(results_dirs)
    written = []
    for task in meta["tasks"]:
        written += bar_chart(rows, meta, task, out_dir)
        if task.get("per_layer"):
            written += per_layer_plot(rows, meta, task, out_dir)
    written += loss_curves(records, meta, out_dir)
    written += probe_curves(records, meta, out_dir)
    written += inpaint_grids(records, meta, out_dir)
    return written


def _cell_records(results_dirs: list[Path]) -> list[dict[str, Any]]:
    recs = []
    for d in results_dirs:
        for p in sorted((d / "cells").glob("*.json")) if d.is_dir() else []:
            if not p.name.endswith(".error.json"):
                try:
                    recs.append(json.loads(p.read_text()))
                except (OSError, json.JSONDecodeError):
                    continue
    return recs


def _save(fig, path: Path) -> list[Path]:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)  # a reader never sees half a PNG
    plt.close(fig)
    return [path]


def bar_chart(
    rows: list[dict[str, Any]], meta: dict[str, Any], task: dict[str, Any], out_dir: Path
) -> list[Path]:
    labels, means, stds = [], [], []
    for arm in meta["arms"]:
        xs = values(rows, arm["name"], task["name"], task["metric"])
        if xs:
            m, s = mean_std([x * task.get("scale", 1.0) for x in xs])
            labels.append(arm["label"])
            means.append(m)
            stds.append(s or 0.0)
    if not labels:
        return []
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.5))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel(task["metric"])
    ax.set_title(f"{task['label']}: mean ± std over seeds")
    return _save(fig, out_dir / f"bar_{task['name']}.png")


def per_layer_plot(
    rows: list[dict[str, Any]], meta: dict[str, Any], task: dict[str, Any], out_dir: Path
) -> list[Path]:
    prefix = f"{task['metric']}@"
    layers: list[str] = []
    for r in rows:  # harness order = network order
        if r["task"] == task["name"] and r["metric"].startswith(prefix):
            layer = r["metric"][len(prefix) :]
            if layer not in layers:
                layers.append(layer)
    if not layers:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    for arm in meta["arms"]:
        pts = [
            (i, mean_std(xs)[0] * task.get("scale", 1.0))
            for i, layer in enumerate(layers)
            if (xs := values(rows, arm["name"], task["name"], prefix + layer))
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arm["label"])
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer")
    ax.set_ylabel(task["metric"])
    ax.set_title(f"{task['label']}: per layer (mean over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out_dir / f"per_layer_{task['name']}.png")


def _loss_key(row: dict[str, Any]) -> str | None:
    for key in ("loss", "loss_rec", "rec_loss", "loss_ce"):
        if isinstance(row.get(key), (int, float)):
            return key
    return next(
        (k for k, v in row.items() if k.startswith("loss") and isinstance(v, (int, float))), None
    )


def loss_curves(records: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    """Training loss per pretraining run: one colour per arm, one line style per seed."""
    return run_curves(
        records, meta, _loss_key, "training loss", "pretraining loss", out_dir / "pretrain_loss.png"
    )


def probe_curves(records: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    """The online probe's kNN top-1 per pretraining run (none without `monitor.data`)."""
    return run_curves(
        records,
        meta,
        lambda r: "knn_top1" if isinstance(r.get("knn_top1"), (int, float)) else None,
        "kNN top-1 (%)",
        "online kNN probe during pretraining",
        out_dir / "pretrain_probe.png",
        log_y=False,
    )


def run_curves(
    records: list[dict[str, Any]],
    meta: dict[str, Any],
    pick: Callable[[dict[str, Any]], str | None],
    ylabel: str,
    title: str,
    path: Path,
    log_y: bool = True,
) -> list[Path]:
    """One line per pretraining run of the metrics.jsonl value that `pick` names in a row: one
    colour per arm, one line style per seed; nothing when no run has such a value."""
    order = [a["name"] for a in meta["arms"]]
    labels = {a["name"]: a["label"] for a in meta["arms"]}
    colours = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn, labelled = 0, set()
    runs = sorted(
        (r for r in records if r.get("kind") == "pretrain"),
        key=lambda r: (order.index(r["arm"]) if r["arm"] in order else len(order), r["seed"]),
    )
    for rec in runs:
        run_dir = rec.get("artifacts", {}).get("run_dir")
        log = read_jsonl(Path(run_dir) / "metrics.jsonl") if run_dir else []
        key = next((k for r in log if (k := pick(r))), None)
        pts = [
            (r["step"], r[key])
            for r in log
            if key and isinstance(r.get(key), (int, float)) and "step" in r
        ]
        if not pts:
            continue
        i = order.index(rec["arm"]) if rec["arm"] in order else len(order)
        label = None if rec["arm"] in labelled else labels.get(rec["arm"], rec["arm"])
        labelled.add(rec["arm"])
        ax.plot(
            *zip(*pts, strict=True),
            color=colours(i % 10),
            linestyle=styles[rec["seed"] % len(styles)],
            linewidth=1,
            marker="o" if not log_y else None,
            markersize=3,
            label=label,
        )
        drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(f"{title} (line style = seed)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _sample_images(rec: dict[str, Any]) -> list[Path]:
    arts = rec.get("artifacts", {})
    for key in ("samples_dir", "images_dir", "run_dir", "out_dir"):
        if arts.get(key):
            d = Path(arts[key])
            for sub in (d, d / "samples"):
                if sub.is_dir():
                    imgs = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                    if imgs:
                        return imgs
    return []


def inpaint_grids(
    records: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path, max_images: int = 8
) -> list[Path]:
    """One figure per masked arm (lowest seed): the pretraining run's last sample grid (masked
    input / inpainted / original rows), else up to `max_images` outputs of the inpaint cell."""
    written = []
    for arm in meta["arms"]:
        if arm.get("method") not in list_methods() or not get_method(arm["method"]).inpaints:
            continue
        recs = sorted(
            (
                r
                for r in records
                if r["arm"] == arm["name"] and r.get("kind") in ("inpaint", "pretrain")
            ),
            key=lambda r: (r["seed"], r["kind"] != "pretrain"),
        )
        rec, imgs = next(((r, im) for r in recs if (im := _sample_images(r))), (None, []))
        if not imgs:
            continue
        imgs = imgs[-1:] if rec["kind"] == "pretrain" else imgs[:max_images]
        cols = min(4, len(imgs))
        nrows = (len(imgs) + cols - 1) // cols
        fig, axes = plt.subplots(
            nrows, cols, figsize=(max(6.0, 3 * cols), 3 * nrows + 0.5), squeeze=False
        )
        for ax in axes.flat:
            ax.axis("off")
        for ax, p in zip(axes.flat, imgs, strict=False):
            ax.imshow(plt.imread(p))
            ax.set_title(p.stem, fontsize=7)
        fig.suptitle(
            f"{arm['label']} (mask: {arm.get('mask', '?')}, seed {rec['seed']})", fontsize=9
        )
        written += _save(fig, out_dir / f"inpaint_{arm['name']}.png")
    return written
