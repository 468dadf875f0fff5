"""`cebench table` on a fixed CSV: exact Markdown and LaTeX, bold best, merging results dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cebench.benchmarks.tables import COLUMNS, read_results, render_latex, render_markdown
from cebench.cli import main as cebench
from cebench.core.errors import DatasetError

CSV = """suite,arm,task,metric,seed,value,config_hash,code_version,device,wall_time_s
t,random,cls,score,0,50.0,h1,v,cpu,1.0
t,random,cls,score,1,52.0,h1,v,cpu,1.0
t,ce,pretrain,time_s,0,100.0,h2,v,cpu,100.0
t,ce,pretrain,time_s,1,120.0,h2,v,cpu,120.0
t,ce,cls,score,0,55.0,h3,v,cpu,2.0
t,ce,cls,score,1,58.0,h3,v,cpu,2.0
t,ce,cls,score@conv1,0,30.0,h3,v,cpu,2.0
t,ce,inpaint,l2,0,0.0200,h4,v,cpu,1.0
t,ce,inpaint,l2,1,0.0300,h4,v,cpu,1.0
t,ce,inpaint,psnr,0,18.5,h4,v,cpu,1.0
t,ce,inpaint,psnr,1,17.5,h4,v,cpu,1.0
"""
META = {
    "name": "t",
    "command": "cebench bench --suite t",
    "arms": [
        {
            "name": "random",
            "label": "Random",
            "method": "random",
            "mask": "none",
            "paper": {"cls": 53.3},
            "paper_time": "< 1 min",
        },
        {
            "name": "ce",
            "label": "Context encoder",
            "method": "context-encoder",
            "mask": "random-region",
            "paper": {"cls": 56.5},
            "paper_time": "14 hours",
        },
    ],
    "tasks": [
        {
            "name": "cls",
            "label": "VOC07 cls",
            "kind": "classify",
            "metric": "score",
            "scale": 1.0,
            "digits": 1,
            "per_layer": True,
        }
    ],
}

EXPECTED_MD = """Produced by: `cebench bench --suite t`

| pretraining | pretraining time (s) | time (paper) | VOC07 cls | VOC07 cls (paper) | inpaint L2 (%) | inpaint PSNR (dB) |
|---|---|---|---|---|---|---|
| Random | - | < 1 min | 51.0 ± 1.4 | 53.3 | - | - |
| Context encoder | **110 ± 14** | 14 hours | **56.5 ± 2.1** | 56.5 | **2.50 ± 0.71** | **18.00 ± 0.71** |

mean ± sample std (n-1) over 2 seed(s) [0, 1]; best mean per column in bold; scores in %

▲ / ▼: mean above / below Random's (two-sided Welch's t-test over seeds, Holm-corrected over the arms of each column, p < 0.05); no marker: not shown to differ (p-values and 95% intervals in summary.csv)

torch threads per cell: not recorded; float format: not recorded (another thread count gives slightly different numbers)

Each column against the reference arm (the markers above):

- **VOC07 cls** vs Random: not shown to differ: Context encoder
"""

EXPECTED_TEX = r"""% produced by: cebench bench --suite t
\begin{tabular}{lrrrrrr}
\toprule
pretraining & pretraining time (s) & time (paper) & VOC07 cls & VOC07 cls (paper) & inpaint L2 (\%) & inpaint PSNR (dB) \\
\midrule
Random & - & $<$ 1 min & 51.0 $\pm$ 1.4 & 53.3 & - & - \\
Context encoder & \textbf{110 $\pm$ 14} & 14 hours & \textbf{56.5 $\pm$ 2.1} & 56.5 & \textbf{2.50 $\pm$ 0.71} & \textbf{18.00 $\pm$ 0.71} \\
\bottomrule
\end{tabular}
% up arrow / down arrow: mean above / below Random's (two-sided Welch's t-test over seeds, Holm-corrected over the arms of each column, p < 0.05); no marker: not shown to differ (p-values and 95% intervals in summary.csv)
% torch threads per cell: not recorded; float format: not recorded (another thread count gives slightly different numbers)
"""


def _results_dir(path: Path, csv_text: str = CSV, meta: dict | None = META) -> Path:
    path.mkdir(parents=True)
    (path / "results.csv").write_text(csv_text)
    if meta is not None:
        (path / "suite.json").write_text(json.dumps(meta))
    return path


def test_markdown_and_latex_exact(tmp_path):
    rows, meta = read_results([_results_dir(tmp_path / "a")])
    assert render_markdown(rows, meta, meta["command"]) == EXPECTED_MD
    assert render_latex(rows, meta, meta["command"]) == EXPECTED_TEX


def test_cli_merges_dirs_and_writes_files(tmp_path, capsys):
    a = _results_dir(tmp_path / "a")
    # a second run: a third seed for the random arm, and seed 1 of the random arm re-measured
    extra = (
        "\n".join(
            [
                ",".join(COLUMNS[:10]),  # a results.csv from before the provenance columns
                "t,random,cls,score,2,66.0,h1,v,cpu,1.0",
                "t,random,cls,score,1,55.0,h1,v,cpu,1.0",
            ]
        )
        + "\n"
    )
    b = _results_dir(tmp_path / "b", extra, meta=None)
    out = tmp_path / "merged"
    assert cebench(["table", str(a), str(b), "--out", str(out), "--latex"]) == 0
    md = (out / "table.md").read_text()
    # random cls seeds 0,1,2 = 50, 55 (later dir wins), 66 -> 57.0 +- sqrt(67), now the best
    assert "| Random | - | < 1 min | **57.0 ± 8.2** | 53.3 | - | - |" in md
    assert "| 56.5 ± 2.1 |" in md
    assert md.startswith(
        f"Produced by: `cebench table {a} {b} --out {out} --latex` from the results of "
        "`cebench bench --suite t`"
    )
    assert (out / "table.tex").read_text().count(r"\textbf{") == 4
    assert (out / "results.csv").read_text().count("\n") == 1 + 11 + 1
    assert (out / "figures" / "bar_cls.png").stat().st_size > 0
    assert (out / "figures" / "per_layer_cls.png").stat().st_size > 0
    assert "57.0 ± 8.2" in capsys.readouterr().out


def test_without_suite_json_and_bad_csv(tmp_path):
    rows, meta = read_results([_results_dir(tmp_path / "a", meta=None)])
    assert [a["name"] for a in meta["arms"]] == ["random", "ce"]
    assert meta["tasks"][0]["metric"] == "score"
    assert "| random | - | 51.000 ± 1.414 |" in render_markdown(rows, meta)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.csv").write_text("arm,value\nx,1\n")
    with pytest.raises(DatasetError, match="columns"):
        read_results([tmp_path / "bad"])
    with pytest.raises(DatasetError, match="no results.csv"):
        read_results([tmp_path / "missing"])


def test_table_readme_block_is_replaced_by_the_table(tmp_path, capsys):
    """`cebench table DIR --readme FILE` copies DIR/table.md between FILE's markers, leaving the
    rest of the file (and blocks of other tables) as they were."""
    a = _results_dir(tmp_path / "a")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# title\n\n<!-- cebench-table a/table.md -->\nold table\n<!-- /cebench-table -->\n\n"
        "<!-- cebench-table b/table.md -->\nother\n<!-- /cebench-table -->\ntail\n"
    )
    assert cebench(["table", str(a), "--no-figures", "--readme", str(readme)]) == 0
    text = readme.read_text()
    table = (a / "table.md").read_text()
    assert text == (
        "# title\n\n<!-- cebench-table a/table.md -->\n" + table + "<!-- /cebench-table -->\n\n"
        "<!-- cebench-table b/table.md -->\nother\n<!-- /cebench-table -->\ntail\n"
    )
    from cebench.benchmarks.render import readme_blocks

    assert readme_blocks(text)[0] == ("a/table.md", table)
    # no block for this table: one line naming both, exit 2, the file untouched
    readme.write_text("nothing here\n")
    capsys.readouterr()
    assert cebench(["table", str(a), "--no-figures", "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "has no block for a/table.md" in err and len(err.strip().splitlines()) == 1
    assert readme.read_text() == "nothing here\n"


def test_compare_runs_by_hand(tmp_path, capsys):
    """Two runs of the same cells: per column, the largest and mean |a - b| (hand-computed)."""
    from cebench.benchmarks.compare_runs import main as compare

    a = _results_dir(tmp_path / "a")
    b = _results_dir(
        tmp_path / "b",
        CSV.replace("t,random,cls,score,0,50.0", "t,random,cls,score,0,50.5").replace(
            "t,ce,cls,score,1,58.0", "t,ce,cls,score,1,56.0"
        ),
    )
    assert compare([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    # cls: |50 - 50.5|, 0, 0, |58 - 56| over 4 cells -> max 2, mean 0.625; inpaint L2 (x100): 0
    assert "| VOC07 cls | 4 | 2 | 0.625 |" in out
    assert "| inpaint L2 (%) | 2 | 0 | 0 |" in out
    assert compare([str(a), str(tmp_path / "nothing")]) == 2


def test_merging_two_suites_keeps_one_value_per_seed(tmp_path):
    """results/methods reuses the default run's cells under another suite name: merged, each
    arm still has one value per seed (the later folder's), not both copies."""
    a = _results_dir(tmp_path / "a")
    b = _results_dir(tmp_path / "b", CSV.replace("\nt,", "\nother,"))
    rows, _ = read_results([a, b])
    cls = sorted((r["seed"], r["suite"]) for r in rows if r["arm"] == "ce" and r["metric"] == "score")
    assert cls == [(0, "other"), (1, "other")]
