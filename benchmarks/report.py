"""The report page and the TensorBoard HParams summary of a results dir (`cebench table` writes both).

    cebench table results/default        # -> results/default/index.html, results/default/hparams/
    tensorboard --logdir results/default  # HParams tab: one session per arm x seed

`write_report` renders OUT/index.html, one self-contained page (no file or network fetched: the
figures are inlined as base64 PNGs, the sorting script and the style are inline) with
- the command that produced the results (and the `cebench table` that re-rendered them);
- the summary table of table.md (`tables.table_cells`: arms x headline metrics, best in bold);
- every figure of OUT/figures;
- every row of OUT/results.csv with whatever columns it has (significance columns included), each
  with its provenance: the CSV's own config hash, code version, device and wall time, and a link to
  the cell's record (its resolved config) in cells/ where that file exists.
Click a column header to sort (numbers as numbers; again to reverse); `index.html#sort=value&dir=desc`
(or `&table=summary`) opens the page sorted.

`write_hparams` writes OUT/hparams/: one TensorBoard HParams session per arm and seed (the arm,
its method and mask, the seed; each task's headline metric and the pretraining time), through
torch.utils.tensorboard's `add_hparams`, replacing the previous summary whole.
"""

from __future__ import annotations

import base64
import csv
import html
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cebench.benchmarks.stats import footer
from cebench.benchmarks.tables import FROM, table_cells
from cebench.core.io import atomic_write_text

_ID_COLUMNS = ("arm", "task", "seed")


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file, as text (whatever its columns)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _cell_link(row: dict[str, str], results_dirs: list[Path], out: Path) -> str:
    """Relative link from `out` to the record (cells/<arm>.<task>.s<seed>.json) of a CSV row's
    cell, from the last results dir that has it; "" when none has."""
    if not all(k in row for k in _ID_COLUMNS):
        return ""
    name = f"{row['arm']}.{row['task']}.s{row['seed']}.json"
    for d in reversed(results_dirs):
        p = (d if d.is_dir() else d.parent) / "cells" / name
        if p.is_file():
            return os.path.relpath(p.resolve(), out.resolve()).replace(os.sep, "/")
    return ""


def _table(table_id: str, header: list[str], body: list[list[str]], note: str = "") -> str:
    """A sortable <table> (cells are already HTML)."""
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    caption = f"<caption>{html.escape(note)}</caption>" if note else ""
    return (
        f'<table id="{table_id}" class="sortable">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _figures(fig_dir: Path) -> str:
    figs = sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    if not figs:
        return "<p>No figures (rendered with --no-figures, or none could be drawn).</p>"
    parts = []
    for p in figs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(p.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        )
    return "\n".join(parts)


def render_report(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    out: Path,
    results_dirs: list[Path],
    command: str = "",
) -> str:
    """The page's HTML (see the module docstring); reads OUT/results.csv and OUT/figures."""
    header, csv_rows = read_csv_rows(out / "results.csv")
    cols, text, best = table_cells(rows, meta)
    summary = [
        [html.escape(arm["label"])]
        + [
            f"<strong>{html.escape(t)}</strong>" if b else html.escape(t)
            for t, b in zip(t_row, b_row, strict=True)
        ]
        for arm, t_row, b_row in zip(meta["arms"], text, best, strict=True)
    ]
    body = []
    for r in csv_rows:
        link = _cell_link(r, results_dirs, out)
        cells = [html.escape(r.get(h) or "") for h in header]
        cells.append(f'<a href="{html.escape(link)}">{html.escape(link)}</a>' if link else "-")
        body.append(cells)
    commands = [c for c in command.split(f" {FROM} ") if c]
    produced = (
        " from the results of ".join(f"<code>{html.escape(c)}</code>" for c in commands)
        if commands
        else "unknown"
    )
    seeds = sorted({r["seed"] for r in rows})
    versions = sorted({r.get("code_version", "") for r in csv_rows} - {""})
    devices = sorted({r.get("device", "") for r in csv_rows} - {""})
    title = "cebench results: " + (", ".join(n for n in meta.get("names", []) if n) or out.name)
    return _PAGE.format(
        title=html.escape(title),
        produced=produced,
        generated=html.escape(time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        versions=html.escape(", ".join(versions) or "-"),
        devices=html.escape(", ".join(devices) or "-"),
        summary=_table(
            "summary",
            ["pretraining"] + [c.label for c in cols],
            summary,
            f"mean ± sample std over {len(seeds)} seed(s) {seeds}; best mean per column in bold"
            + (f". {note}" if (note := footer(meta)) else ""),
        ),
        figures=_figures(out / "figures"),
        results=_table("results", header + ["cell record (config)"], body),
        n_rows=len(csv_rows),
        script=_SCRIPT,
    )


def write_report(
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    out: Path,
    results_dirs: list[Path],
    command: str = "",
) -> Path:
    path = out / "index.html"
    atomic_write_text(path, render_report(rows, meta, out, results_dirs, command))
    return path


def hparam_sessions(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One session per arm and seed: {"name", "hparams", "metrics"} (headline metrics only)."""
    sessions = []
    for arm in meta["arms"]:
        for seed in sorted({r["seed"] for r in rows if r["arm"] == arm["name"]}):
            mine = [r for r in rows if r["arm"] == arm["name"] and r["seed"] == seed]
            metrics = {}
            for r in mine:
                if r["task"] == "pretrain" and r["metric"] == "time_s":
                    metrics["pretrain/time_s"] = r["value"]
            for t in meta["tasks"]:
                v = next((r["value"] for r in mine if (r["task"], r["metric"]) == (t["name"], t["metric"])), None)  # fmt: skip
                if v is not None:
                    metrics[f"{t['name']}/{t['metric']}"] = v * t.get("scale", 1.0)
            if metrics:
                hp = {"arm": arm["name"], "seed": seed}
                hp.update({k: str(arm[k]) for k in ("method", "mask") if arm.get(k)})
                sessions.append(
                    {"name": f"{arm['name']}-s{seed}", "hparams": hp, "metrics": metrics}
                )
    return sessions


def write_hparams(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path | None:
    """OUT/hparams/<arm>-s<seed>/ event files (see the module docstring); None when there is
    nothing to compare. Written beside, then swapped in, so a reader never sees half of it."""
    sessions = hparam_sessions(rows, meta)
    if not sessions:
        return None
    from cebench.core.logger import tensorboard_writer

    final, tmp = out / "hparams", out / f".hparams.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = tensorboard_writer(tmp)
    try:
        for s in sessions:
            writer.add_hparams(s["hparams"], s["metrics"], run_name=s["name"])
    finally:
        writer.close()
    old = out / f".hparams.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


_SCRIPT = r"""
(function () {
  function key(text) {
    var t = text.trim().replace(/^[*]+|[*]+$/g, "");
    var m = t.match(/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/);
    return m && m[0].length > 0 && t !== "-" ? [0, parseFloat(m[0])] : [1, t.toLowerCase()];
  }
  function cmp(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  function sortTable(table, col, desc) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var c = cmp(key(r1.cells[col].textContent), key(r2.cells[col].textContent));
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute("aria-sort", i === col ? (desc ? "descending" : "ascending") : "none");
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () {
        sortTable(table, i, th.getAttribute("aria-sort") === "ascending");
      });
    });
  });
  var params = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p[0]) params[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });
  if (params.sort) {
    var table = document.getElementById(params.table || "results");
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
      return th.textContent;
    });
    var col = heads.indexOf(params.sort);
    if (col < 0) throw new Error("no column " + params.sort + " in table " + table.id);
    sortTable(table, col, params.dir === "desc");
  }
  document.body.setAttribute("data-ready", "1");
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script>
window.addEventListener("error", function (e) {{
  var box = document.getElementById("js-errors");
  if (box) {{ box.textContent += (e.message || String(e)) + "\\n"; box.hidden = false; }}
}});
</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f2f2f2; cursor: pointer; user-select: none; }}
th[aria-sort="ascending"]::after {{ content: " \\25B2"; }}
th[aria-sort="descending"]::after {{ content: " \\25BC"; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
caption {{ caption-side: bottom; text-align: left; color: #666; padding-top: 0.3em; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
figure img {{ max-width: 640px; border: 1px solid #ddd; }}
#js-errors {{ color: #b00; }}
</style>
</head>
<body>
<pre id="js-errors" hidden></pre>
<h1>{title}</h1>
<p>Produced by: {produced}<br>
Code version(s): <code>{versions}</code>; device(s): <code>{devices}</code>; page written {generated}.</p>
<h2>Summary</h2>
{summary}
<h2>Figures</h2>
{figures}
<h2>All results ({n_rows} rows of results.csv)</h2>
<p>One row per arm, task, metric and seed, with its provenance (config hash, code version, device,
wall time) and the cell's record with its resolved config. Click a header to sort.</p>
{results}
<script>{script}</script>
</body>
</html>
"""
