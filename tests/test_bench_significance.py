"""Significance against the reference arm, seeds added while undecided, and cells made stale by a
change of the code they run (the cell hash holds a code fingerprint)."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from cebench.benchmarks import stats
from cebench.benchmarks.runner import Runner
from cebench.benchmarks.suite import load_suite
from cebench.core.errors import ConfigError

SUITE = textwrap.dedent("""
    name: sig
    seeds: [0, 1, 2]
    reference: rand
    pretrain: {seed: "{seed}", out: "{work}"}
    transfer: {encoder: "{encoder}", seed: "{seed}"}
    arms:
      - {name: rand, label: Random, method: random, encoder: tiny}
      - {name: ce, label: Context encoder, method: context-encoder, mask: center}
      - {name: sup, label: Supervised, method: supervised}
    tasks:
      - {name: cls, label: Cls, kind: classify, metric: score}
      - {name: seg, label: Seg, kind: segment, metric: score}
""")
# per seed 0..5: ce is far above rand on cls, level with it on seg (undecided at 3 seeds);
# sup is far above on both (decided at once)
VALUES = {
    ("rand", "cls"): [40.0, 42.0, 44.0, 41.0, 43.0, 42.0],
    ("ce", "cls"): [50.0, 53.0, 56.0, 52.0, 54.0, 53.0],
    ("sup", "cls"): [80.0, 82.0, 81.0, 83.0, 80.0, 81.0],
    ("rand", "seg"): [10.0, 12.0, 14.0, 11.0, 13.0, 12.0],
    ("ce", "seg"): [11.0, 13.0, 10.0, 12.0, 14.0, 11.0],
    ("sup", "seg"): [30.0, 31.0, 29.0, 30.0, 32.0, 31.0],
}


class Executor:
    """Fixed metrics per arm, task and seed; `code` is the fingerprint of each cell kind's code."""

    def __init__(self, code: dict[str, str] | None = None) -> None:
        self.code = code or {}
        self.ran: list[str] = []

    def prepare(self, suite, out_dir):
        pass

    def resolve(self, cell):
        return dict(cell.config)

    def fingerprint(self, cell):
        return self.code.get(cell.kind, "v1")

    def run(self, cell, resolved, work):
        self.ran.append(cell.id)
        if cell.kind == "pretrain":
            return {"metrics": {"loss": 0.5}, "device": "cpu:test"}
        return {"metrics": {"score": VALUES[(cell.arm, cell.task)][cell.seed]}, "device": "cpu"}


def _runner(tmp_path: Path, executor, overrides=(), text=SUITE) -> Runner:
    p = tmp_path / "sig.yaml"
    p.write_text(text)
    return Runner(load_suite(p, list(overrides)), tmp_path / "out", executor, log=lambda m: None)


def test_welch_matches_scipy_and_the_hand_formula():
    xs, ys = [50.0, 53.0, 56.0], [40.0, 42.0, 44.0]
    p, lo, hi = stats.welch(xs, ys)
    ref = scipy_stats.ttest_ind(xs, ys, equal_var=False)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # by hand: var 9 and 4, se^2 = 9/3 + 4/3, t = 11 / sqrt(13/3)
    t = 11 / (13 / 3) ** 0.5
    df = (13 / 3) ** 2 / ((9 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert p == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-12)
    assert stats.welch([1.0], ys) is None  # one seed: no test
    assert stats.welch([1.0, 1.0], [2.0, 2.0]) is None  # no variance at all: undefined


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert stats.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]


def test_tables_mark_the_arms_that_differ_and_summary_holds_the_tests(tmp_path):
    runner = _runner(tmp_path, Executor())
    runner.run()
    out = tmp_path / "out"
    md = (out / "table.md").read_text()
    assert "| Context encoder | **0 ± 0** | 53.0 ± 3.0 ▲ | 11.3 ± 1.5 |" in md  # cls above, seg level
    assert "| Random | - | 42.0 ± 2.0 | 12.0 ± 2.0 |" in md  # the reference has no marker
    assert "Holm-corrected" in md and "Random's" in md
    assert "- **Seg** vs Random: above: Supervised; not shown to differ: Context encoder" in md
    assert "torch threads per cell:" in md and "float format:" in md
    with open(out / "summary.csv", newline="") as f:
        rows = {(r["arm"], r["task"]): r for r in csv.DictReader(f)}
    ce = rows[("ce", "cls")]
    xs, ys = VALUES[("ce", "cls")][:3], VALUES[("rand", "cls")][:3]
    p = scipy_stats.ttest_ind(xs, ys, equal_var=False).pvalue
    p_sup = scipy_stats.ttest_ind(VALUES[("sup", "cls")][:3], ys, equal_var=False).pvalue
    assert float(ce["p_welch"]) == pytest.approx(p, rel=1e-5)
    # Holm over the two arms of the column: the larger p is multiplied by 1, the smaller by 2
    assert float(ce["p_holm"]) == pytest.approx(max(p, 2 * min(p, p_sup)), rel=1e-5)
    assert ce["significant"] == "above" and float(ce["diff"]) == pytest.approx(11.0)
    assert rows[("ce", "seg")]["significant"] == ""
    assert rows[("rand", "cls")]["p_welch"] == ""
    tex = (out / "table.tex").read_text()
    assert r"$\uparrow$" in tex


def test_table_reference_option_and_a_wrong_arm(tmp_path):
    from cebench.benchmarks.render import render_all
    from cebench.core.errors import DatasetError

    _runner(tmp_path, Executor()).run()
    out = tmp_path / "out"
    render_all([out], out, reference="sup", figures=False)
    md = (out / "table.md").read_text()
    assert "53.0 ± 3.0 ▼" in md and "Supervised's" in md
    with pytest.raises(DatasetError, match="'nope' is not an arm.*rand, ce, sup"):
        render_all([out], out, reference="nope", figures=False)


def test_more_seeds_go_to_undecided_arms_and_the_reference_only(tmp_path):
    ex = Executor()
    runner = _runner(tmp_path, ex, ["more_seeds.max=5", "more_seeds.min_effect=1.0"])
    outcome = runner.run()
    seeds = {arm: sorted({int(c.rsplit(".s", 1)[1]) for c in ex.ran if c.startswith(arm + ".")})
             for arm in ("rand", "ce", "sup")}
    # ce is level with rand on seg: seeds 3 and 4 for both; sup is decided after 3 seeds
    assert seeds == {"rand": [0, 1, 2, 3, 4], "ce": [0, 1, 2, 3, 4], "sup": [0, 1, 2]}
    assert "ce.pretrain.s3" in outcome.ran and "ce.pretrain.s3" in ex.ran
    assert ex.ran.index("ce.pretrain.s4") < ex.ran.index("ce.seg.s4")
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        ce_seg = [r for r in csv.DictReader(f) if r["arm"] == "ce" and r["task"] == "seg"]
    assert len(ce_seg) == 5
    # the same command again: every round's cells are cached, nothing runs
    ex2 = Executor()
    again = _runner(tmp_path, ex2, ["more_seeds.max=5", "more_seeds.min_effect=1.0"]).run()
    assert ex2.ran == [] and len(again.cached) == len(outcome.ran)


def test_more_seeds_stop_once_the_interval_is_within_the_minimum_effect(tmp_path):
    ex = Executor()
    # a minimum effect of 10 points: ce vs rand on seg (interval about +-4) is decided at 3 seeds
    _runner(tmp_path, ex, ["more_seeds.max=6", "more_seeds.min_effect=10"]).run()
    assert not any(c.endswith(".s3") for c in ex.ran)


def test_bad_significance_keys_are_refused(tmp_path):
    for override, msg in (
        ("reference=nope", "'reference' must name an arm"),
        ("alpha=1.5", "'alpha' must be between 0 and 1"),
        ("seeds=[0,0]", "lists a seed twice"),
        ("more_seeds.max=-1", "more_seeds.max"),
    ):
        with pytest.raises(ConfigError, match=msg):
            _runner(tmp_path, Executor(), [override])


def test_a_code_change_makes_its_cells_and_their_dependants_stale(tmp_path, capsys):
    _runner(tmp_path, Executor()).run()
    ex = Executor({"pretrain": "v2"})  # the pretraining code changed; transfer code did not
    runner = _runner(tmp_path, ex)
    runner.resolve_all()
    states = {c.id: runner.state(c) for c in runner.selected}
    assert states["ce.pretrain.s0"] == "stale" and states["ce.cls.s0"] == "stale"
    assert states["rand.cls.s0"] == "done"  # no pretraining cell behind it
    runner.run()
    assert sorted(ex.ran) == sorted(
        c for c, s in states.items() if s == "stale"
    ) and "rand.cls.s1" not in ex.ran
    rec = (tmp_path / "out" / "cells" / "ce.pretrain.s0.json").read_text()
    assert '"code_fingerprint": "v2"' in rec


def test_a_change_to_transfer_code_moves_only_the_transfer_cells(tmp_path, monkeypatch, capsys):
    """The real executor's fingerprint: `--list` after a change to a module a cell runs."""
    from cebench.benchmarks import cells as cells_mod
    from cebench.benchmarks.runner import get_args_parser, main

    args = get_args_parser().parse_args(["--suite", "mini", "--out", str(tmp_path / "o"),
                                         "--list"])
    real = cells_mod.CellExecutor.fingerprint

    def fingerprint(self, cell):
        return real(self, cell) + ("x" if cell.kind == "transfer" else "")

    assert main(args) == 0
    first = capsys.readouterr().out
    monkeypatch.setattr(cells_mod.CellExecutor, "fingerprint", fingerprint)
    assert main(args) == 0
    second = capsys.readouterr().out
    kinds = set()
    for a, b in zip(first.splitlines(), second.splitlines(), strict=True):
        cid, h1, h2 = a.split()[1], a.split()[2], b.split()[2]
        kind = "pretrain" if ".pretrain." in cid else "inpaint" if ".inpaint." in cid else "transfer"
        kinds.add(kind)
        assert (h1 != h2) == (kind == "transfer"), cid
    assert kinds == {"pretrain", "transfer"} or kinds == {"pretrain", "inpaint", "transfer"}


def test_one_seed_is_not_tested_and_says_so(tmp_path):
    _runner(tmp_path, Executor(), ["seeds=[0]"]).run()
    md = (tmp_path / "out" / "table.md").read_text()
    assert "▲" not in md.split("\n\n")[1]  # the table itself: no marker without a test
    assert (
        "- **Cls** vs Random: not tested (fewer than 2 seeds on a side, or no spread): "
        "Context encoder, Supervised"
    ) in md


def test_more_seeds_rounds_keep_to_only_and_reuse_extra_seeds(tmp_path):
    ex = Executor()
    extra = ["more_seeds.max=5", "more_seeds.min_effect=1.0"]
    p = tmp_path / "sig.yaml"
    p.write_text(SUITE)
    # --only: ce's segmentation is undecided; its rounds bring ce.seg (and its pretraining) only
    Runner(load_suite(p), tmp_path / "a", Executor(), log=lambda m: None).run()  # seeds 0-2
    Runner(load_suite(p, extra), tmp_path / "a", ex, only=["ce.seg*"], log=lambda m: None).run()
    assert {c for c in ex.ran if c.endswith((".s3", ".s4"))} == {
        "ce.pretrain.s3", "ce.seg.s3", "ce.pretrain.s4", "ce.seg.s4"
    }
    # --reuse: the extra seeds' cells come from the folder that has them, nothing runs again
    full = Executor()
    Runner(load_suite(p, extra), tmp_path / "b", full, log=lambda m: None).run()
    again = Executor()
    out = Runner(load_suite(p, extra), tmp_path / "c", again, reuse=[tmp_path / "b"],
                 log=lambda m: None).run()
    assert again.ran == [] and len(out.cached) == len(full.ran)


def test_degenerate_comparisons():
    assert stats.welch([1.0, float("nan")], [1.0, 2.0]) is None
    const = stats.Comparison("a", "t", "m", "c", 3, 100.0, 0.0, "ref", 3, diff=50.0)
    assert const.decided(0.05, 1.0)  # both sides constant: more seeds cannot change it
    one = stats.Comparison("a", "t", "m", "c", 1, 100.0, None, "ref", 3, diff=50.0)
    assert not one.decided(0.05, 1.0)
