"""`cebench table`: render results.csv (one or several results dirs) as Markdown, LaTeX and figures.

    cebench table results/default                         # -> results/default/table.md + figures/
    cebench table results/run-a results/run-b --out results/merged --latex

Tables come from `tables.py` and figures from `figures.py`; this module puts them together, so that
neither of those imports the other's caller.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cebench.benchmarks.figures import render_figures
from cebench.benchmarks.tables import (
    COLUMNS,
    FROM,
    read_results,
    render_latex,
    render_markdown,
    write_csv,
)
from cebench.core.io import atomic_write_text


def render_all(
    paths: list[str | Path],
    out: str | Path,
    *,
    command: str = "",
    latex: bool = False,
    figures: bool = True,
    log=print,
) -> Path:
    """results.csv of every path -> OUT/table.md (+ table.tex, + figures/); returns table.md's path."""
    rows, meta = read_results(paths)
    out = Path(out)
    command = command or meta.get("command", "")
    if len(paths) > 1 or Path(paths[0]).resolve() != out.resolve():
        write_csv([{k: r[k] for k in COLUMNS} for r in rows], out / "results.csv")
    atomic_write_text(out / "table.md", render_markdown(rows, meta, command))
    if latex:
        atomic_write_text(out / "table.tex", render_latex(rows, meta, command))
    if figures:
        try:
            render_figures(rows, meta, [Path(p) for p in paths], out / "figures")
        except Exception as e:  # a figure must never cost the tables
            log(f"figures not drawn: {type(e).__name__}: {e}")
    return out / "table.md"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", nargs="+", help="results directories (or results.csv files) to merge")
    p.add_argument("--out", default=None, help="output directory (default: the first results dir)")
    p.add_argument("--latex", action="store_true", help="also write table.tex")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    return p


def main(args: argparse.Namespace) -> int:
    first = Path(args.results[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent)
    command = (
        "cebench table "
        + " ".join(args.results)
        + (f" --out {args.out}" if args.out else "")
        + (" --latex" if args.latex else "")
    )
    origin = read_results(args.results)[1].get("command")
    if origin:
        command += f" {FROM} {origin}"
    path = render_all(
        args.results, out, command=command, latex=args.latex, figures=not args.no_figures
    )
    print(path.read_text())
    return 0
