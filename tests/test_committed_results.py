"""The committed results are what the code at HEAD produces, and the README shows them as they are.

Every row of a committed results/<suite>/results.csv carries its cell's hash, which covers the
resolved config and the fingerprint of the code the cell runs (`cebench.core.fingerprint`). A
change to that code (or to the suite) without rerunning the affected cells fails here, naming the
cells and the command that brings the table up to date.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cebench.benchmarks.cells import CellExecutor
from cebench.benchmarks.render import readme_blocks
from cebench.benchmarks.runner import Runner
from cebench.benchmarks.suite import load_suite
from cebench.benchmarks.tables import read_results, render_markdown

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("*/results.csv"))


def test_there_are_committed_results():
    assert ROOT / "results" / "default" in COMMITTED


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_results_are_current(folder, tmp_path):
    meta = json.loads((folder / "suite.json").read_text())
    suite = load_suite(meta["name"], meta.get("overrides", []))  # as it was run (--set)
    runner = Runner(suite, tmp_path / "out", CellExecutor(), log=lambda m: None)
    runner.resolve_all()
    ids = {(c.arm, c.task, c.seed): c.id for c in runner.planned}
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stale = sorted(
        {
            ids.get((r["arm"], r["task"], int(r["seed"])), f"{r['arm']}.{r['task']}.s{r['seed']}")
            for r in rows
            if r["config_hash"] != runner.hashes.get(ids.get((r["arm"], r["task"], int(r["seed"]))))
        }
    )
    present = {ids.get((r["arm"], r["task"], int(r["seed"]))) for r in rows}
    missing = sorted(c.id for c in runner.cells if c.id not in present)
    fix = f"rerun `cebench bench --suite {meta['name']} --out results/{folder.name}`"
    assert not stale, f"{len(stale)} cells of {folder} are stale ({', '.join(stale[:6])}...): {fix}"
    assert not missing, f"{len(missing)} cells missing from {folder} ({missing[:6]}): {fix}"


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_table_is_rendered_from_its_csv(folder):
    rows, meta = read_results([folder])
    table = (folder / "table.md").read_text()
    assert table.startswith("Produced by: `cebench ")  # the command, then the table
    assert table.split("\n", 2)[2] == render_markdown(rows, meta)


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_summary_latex_and_suite_meta_are_current(folder, tmp_path):
    """summary.csv and table.tex are what the tables code makes of the CSV, and suite.json holds
    the suite's current labels, reference and metrics (they render the table)."""
    from cebench.benchmarks.suite import suite_meta
    from cebench.benchmarks.tables import render_latex, write_summary

    rows, meta = read_results([folder])
    write_summary(rows, meta, tmp_path / "summary.csv")
    assert (tmp_path / "summary.csv").read_text() == (folder / "summary.csv").read_text()
    tex = (folder / "table.tex").read_text()
    assert tex.split("\n", 1)[1] == render_latex(rows, meta)  # after its "% produced by" line
    saved = json.loads((folder / "suite.json").read_text())
    want = suite_meta(load_suite(saved["name"], saved.get("overrides", [])))
    assert {k: saved[k] for k in want} == json.loads(json.dumps(want))


def test_readme_tables_equal_their_files():
    text = (ROOT / "README.md").read_text()
    blocks = readme_blocks(text)
    assert any(path == "results/default/table.md" for path, _ in blocks)
    for path, body in blocks:
        want = (ROOT / path).read_text().rstrip("\n") + "\n"
        assert body == want, (
            f"README's block of {path} differs from the file: run `cebench table "
            f"{Path(path).parent} --readme README.md`"
        )
