"""The report page (OUT/index.html) and the HParams summary that `cebench table` writes; the page
is loaded in a real headless Chromium (skipped, with the reason, where none is installed)."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_bench_tables import CSV, META

from cebench.benchmarks.report import render_report, write_hparams
from cebench.benchmarks.tables import read_results
from cebench.cli import main as cebench

PNG = bytes.fromhex(  # a 1x1 red PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc000000301010018dd8db00000000049454e44ae426082"
)


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "res"
    (d / "cells").mkdir(parents=True)
    (d / "results.csv").write_text(CSV)
    (d / "suite.json").write_text(json.dumps(META))
    (d / "cells" / "ce.cls.s0.json").write_text(json.dumps({"config": {"lr": 0.1}}))
    return d


class Tables(HTMLParser):
    """Rows of text of every <table id=...>, the <img> sources, <a> targets and <body> attrs."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self.body, self.errors = {}, [], [], {}, ""
        self._table = self._row = self._cell = None
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "body":
            self.body = a
        elif tag == "pre" and a.get("id") == "js-errors":
            self._in_errors = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
        elif tag == "pre":
            self._in_errors = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_errors:
            self.errors += data


def parse(text):
    p = Tables()
    p.feed(text)
    return p


def test_page_holds_tables_figures_provenance_and_command(results):
    (results / "figures").mkdir()
    (results / "figures" / "bar_cls.png").write_bytes(PNG)
    assert cebench(["table", str(results)]) == 0
    page = (results / "index.html").read_text()
    p = parse(page)
    with open(results / "results.csv", newline="") as f:
        reader = csv.reader(f)
        header, *rows = list(reader)
    got = p.tables["results"]
    assert got[0] == header + ["cell record (config)"]
    assert [r[: len(header)] for r in got[1:]] == rows  # every row, every column, as in the CSV
    # provenance: the cell record is linked where it exists (relative to the page), else "-"
    linked = {tuple(r[1:5]): r[-1] for r in got[1:]}
    assert linked[("ce", "cls", "score", "0")] == "cells/ce.cls.s0.json"
    assert linked[("random", "cls", "score", "0")] == "-"
    assert all((results / h).is_file() for h in p.links)
    # the summary table is table.md's
    summary = {r[0]: r[1:] for r in p.tables["summary"][1:]}
    assert summary["Context encoder"][:1] == ["110 ± 14"]
    assert "56.5 ± 2.1" in summary["Context encoder"] and "51.0 ± 1.4" in summary["Random"]
    assert "<strong>56.5 ± 2.1</strong>" in page
    # self-contained: the figure inlined, nothing fetched
    figs = sorted((results / "figures").glob("*.png"))
    assert len(figs) >= 2  # ours and what `cebench table` drew
    assert p.imgs == [
        "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode() for f in figs
    ]
    assert 'src="http' not in page and "<link" not in page
    assert "<code>cebench table " in page and "<code>cebench bench --suite t</code>" in page


def test_page_shows_whatever_columns_results_csv_has(results, tmp_path):
    """Columns added later (e.g. a significance test's) are shown as they are."""
    rows, meta = read_results([results])
    out = tmp_path / "out"
    out.mkdir()
    text = CSV.splitlines()
    extra = [text[0] + ",p_vs_ref,sig_vs_ref"] + [ln + ",0.03,*" for ln in text[1:]]
    (out / "results.csv").write_text("\n".join(extra) + "\n")
    got = parse(render_report(rows, meta, out, [results])).tables["results"]
    assert got[0][-3:] == ["p_vs_ref", "sig_vs_ref", "cell record (config)"]
    assert all(r[-3:-1] == ["0.03", "*"] for r in got[1:]) and len(got) == len(text)


def test_hparams_summary_read_back_by_tensorboard(results):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    rows, meta = read_results([results])
    for _ in range(2):  # a second render replaces the summary, never adds to it
        out = write_hparams(rows, meta, results)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "ce-s0",
        "ce-s1",
        "random-s0",
        "random-s1",
    ]
    acc = ea.EventAccumulator(str(out / "ce-s1"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("cls/score")] == [58.0]
    assert [e.value for e in acc.Scalars("pretrain/time_s")] == [120.0]
    hp = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hp
    assert b"context-encoder" in hp["_hparams_/session_start_info"]
    assert not list(results.glob(".hparams*"))


# ----- in a real browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _load(page: Path, fragment: str, tmp_path: Path) -> tuple[Tables, str]:
    """The DOM of `page#fragment` after its scripts ran, and Chromium's log."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium; .ci/run installs it when it can)")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.resolve().as_uri() + fragment,
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return parse(r.stdout), r.stderr


def _console_errors(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


def test_page_in_headless_chromium(results, tmp_path):
    (results / "figures").mkdir()
    (results / "figures" / "bar_cls.png").write_bytes(PNG)
    assert cebench(["table", str(results)]) == 0
    dom, log = _load(results / "index.html", "#sort=value&dir=desc", tmp_path)
    assert dom.body.get("data-ready") == "1" and dom.errors == ""
    assert _console_errors(log) == []
    with open(results / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = dom.tables["results"]
    header = got[0]
    assert header[:10] == list(rows[0])
    shown = [dict(zip(header, r, strict=True)) for r in got[1:]]
    # the table matches results.csv row for row, sorted by the page's script by value, descending
    want = sorted(rows, key=lambda r: -float(r["value"]))
    assert [{k: r[k] for k in rows[0]} for r in shown] == want
    assert [float(r["value"]) for r in shown] == sorted(
        (float(r["value"]) for r in rows), reverse=True
    )
    # the summary table sorts too (numbers as numbers, "110 ± 14" by its mean)
    dom, _ = _load(results / "index.html", "#table=summary&sort=pretraining", tmp_path)
    assert [r[0] for r in dom.tables["summary"][1:]] == ["Context encoder", "Random"]


def test_headless_chromium_reports_a_script_error(results, tmp_path):
    """The check above can fail: a script error shows in the page's error box and the log."""
    assert cebench(["table", str(results), "--no-figures"]) == 0
    dom, log = _load(results / "index.html", "#sort=no-such-column", tmp_path)
    assert "no column no-such-column in table results" in dom.errors
    assert dom.body.get("data-ready") is None
    assert any("no-such-column" in ln for ln in _console_errors(log))
