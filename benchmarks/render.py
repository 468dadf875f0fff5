"""`cebench table`: render results.csv (one or several results dirs) as Markdown, LaTeX and figures.

    cebench table results/default                         # -> results/default/table.md + figures/
                                                          #    + index.html + hparams/
    cebench table results/run-a results/run-b --out results/merged --latex

Tables come from `tables.py` and figures from `figures.py`; this module puts them together, so that
neither of those imports the other's caller.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from cebench.benchmarks.figures import render_figures
from cebench.benchmarks.report import write_hparams, write_report
from cebench.benchmarks.tables import (
    COLUMNS,
    FROM,
    LEGACY_COLUMNS,
    read_results,
    render_latex,
    render_markdown,
    write_csv,
    write_summary,
)
from cebench.core.errors import DatasetError
from cebench.core.io import atomic_write_text
from cebench.core.lock import prepare_out_dir

_NUMBERS = {"seed": int, "value": float, "wall_time_s": float}


def check_results_csv(path: str | Path) -> None:
    """DatasetError naming the file, line and column of the first malformed row of a results.csv
    (a results dir or the file itself); the reader trusts what passes."""
    p = Path(path)
    csv_path = p / "results.csv" if p.is_dir() else p
    if not csv_path.is_file():
        raise DatasetError(f"no results.csv at {csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames not in (COLUMNS, LEGACY_COLUMNS):
                raise DatasetError(
                    f"{csv_path}: not a cebench results.csv (columns {reader.fieldnames}, "
                    f"expected {', '.join(COLUMNS)})"
                )
            for row in reader:
                line = reader.line_num
                if None in row or any(row[k] is None for k in reader.fieldnames):
                    raise DatasetError(
                        f"{csv_path} line {line}: the row does not have the header's "
                        f"{len(reader.fieldnames)} columns"
                    )
                for key, kind in _NUMBERS.items():
                    try:
                        kind(row[key])
                    except ValueError:
                        raise DatasetError(
                            f"{csv_path} line {line}: column '{key}' is {row[key]!r}, not "
                            f"{'an integer' if kind is int else 'a number'}"
                        ) from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv_path}: not a readable CSV file ({e})") from None
    suite_json = csv_path.parent / "suite.json"
    if suite_json.is_file():
        try:
            meta = json.loads(suite_json.read_text())
            ok = isinstance(meta, dict) and all(
                isinstance(x, dict) and "name" in x
                for key in ("arms", "tasks")
                for x in meta.get(key, [])
            )
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise DatasetError(f"{suite_json}: not valid JSON ({e})") from None
        if not ok:
            raise DatasetError(f"{suite_json}: not a cebench suite.json (arms/tasks without names)")


def read_checked(paths: list[str | Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`read_results` after `check_results_csv` on every path."""
    for p in paths:
        check_results_csv(p)
    return read_results(paths)


def render_all(
    paths: list[str | Path],
    out: str | Path,
    *,
    command: str = "",
    latex: bool = False,
    figures: bool = True,
    log=print,
    reference: str | None = None,
) -> Path:
    """results.csv of every path -> OUT/table.md, OUT/summary.csv (+ table.tex, + figures/),
    OUT/index.html (the report page) and OUT/hparams/ (TensorBoard HParams,
    `cebench.benchmarks.report`); returns table.md's path. `reference`: the arm the others are
    tested against (default: the suite's `reference`, else `random`)."""
    rows, meta = read_checked(paths)
    if reference is not None and reference not in {a["name"] for a in meta["arms"]}:
        raise DatasetError(
            f"--reference {reference!r} is not an arm of these results; arms: "
            + ", ".join(a["name"] for a in meta["arms"])
        )
    out = prepare_out_dir(out)
    command = command or meta.get("command", "")
    if len(paths) > 1 or Path(paths[0]).resolve() != out.resolve():
        write_csv([{k: r[k] for k in COLUMNS} for r in rows], out / "results.csv")
    atomic_write_text(out / "table.md", render_markdown(rows, meta, command, reference))
    write_summary(rows, meta, out / "summary.csv", reference)
    if latex:
        atomic_write_text(out / "table.tex", render_latex(rows, meta, command, reference))
    if figures:
        try:
            render_figures(rows, meta, [Path(p) for p in paths], out / "figures")
        except Exception as e:  # a figure must never cost the tables
            log(f"figures not drawn: {type(e).__name__}: {e}")
    write_report(rows, meta, out, [Path(p) for p in paths], command)
    try:
        write_hparams(rows, meta, out)
    except Exception as e:  # nor the TensorBoard summary
        log(f"TensorBoard HParams summary not written: {type(e).__name__}: {e}")
    return out / "table.md"


# a README block that shows a table.md: the file's text between the two markers, kept equal to
# it by `cebench table|bench ... --readme README.md` (and checked by tests/test_committed_results.py)
README_BLOCK = re.compile(
    r"(?P<open><!-- cebench-table (?P<path>\S+) -->\n)(?P<body>.*?)(?P<close><!-- /cebench-table -->)",
    re.S,
)


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """(path as written in the marker, body) of each table block of a README's text."""
    return [(m["path"], m["body"]) for m in README_BLOCK.finditer(text)]


def update_readme(readme: str | Path, table: str | Path) -> int:
    """Replace the body of every block of `readme` that names `table` (relative to the README's
    folder) with the table's text; returns how many. None is an error naming both files."""
    readme, table = Path(readme), Path(table)
    if not readme.is_file():
        raise DatasetError(f"--readme {readme}: no such file")
    text = readme.read_text(encoding="utf-8")
    body = table.read_text(encoding="utf-8").rstrip("\n") + "\n"
    count = 0

    def swap(m: re.Match) -> str:
        nonlocal count
        if (readme.parent / m["path"]).resolve() != table.resolve():
            return m.group(0)
        count += 1
        return m["open"] + body + m["close"]

    new = README_BLOCK.sub(swap, text)
    if not count:
        rel = os.path.relpath(table, readme.parent)
        raise DatasetError(
            f"{readme} has no block for {rel}: add the lines '<!-- cebench-table {rel} -->' and "
            "'<!-- /cebench-table -->' where the table goes"
        )
    if new != text:
        atomic_write_text(readme, new)
    return count


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", nargs="+", help="results directories (or results.csv files) to merge")
    p.add_argument("--out", default=None, help="output directory (default: the first results dir)")
    p.add_argument("--latex", action="store_true", help="also write table.tex")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument(
        "--reference",
        default=None,
        metavar="ARM",
        help="the arm the others are tested against (default: the suite's 'reference', else "
        "'random')",
    )
    p.add_argument(
        "--readme",
        default=None,
        metavar="FILE",
        help="also copy OUT/table.md into FILE's '<!-- cebench-table OUT/table.md -->' block",
    )
    return p


def main(args: argparse.Namespace) -> int:
    first = Path(args.results[0])
    out = Path(args.out) if args.out else (first if first.is_dir() else first.parent)
    command = (
        "cebench table "
        + " ".join(args.results)
        + (f" --out {args.out}" if args.out else "")
        + (" --latex" if args.latex else "")
        + (f" --reference {args.reference}" if args.reference else "")
    )
    origin = read_checked(args.results)[1].get("command")
    if origin:
        command += f" {FROM} {origin}"
    path = render_all(
        args.results,
        out,
        command=command,
        latex=args.latex,
        figures=not args.no_figures,
        reference=args.reference,
    )
    if args.readme:
        update_readme(args.readme, path)
    print(path.read_text())
    return 0
