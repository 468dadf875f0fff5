"""The steps-curve figure of the issue-12 study (cebench.benchmarks.steps_curve)."""

from __future__ import annotations

from cebench.benchmarks.steps_curve import main, read_scores

HEADER = "suite,arm,task,metric,seed,value,config_hash,code_version,device,wall_time_s\n"


def test_steps_curve_reads_per_seed_scores_and_writes_the_png(tmp_path):
    rows = [
        ("random", "cls-linear", "score", 0, 25.0),
        ("random", "cls-linear", "score", 1, 27.0),
        ("ce-400", "cls-linear", "score", 0, 30.0),
        ("ce-1600", "cls-linear", "score", 0, 33.0),
        ("ce-1600", "cls-linear", "top1@conv1", 0, 99.0),  # another metric: left out
        ("ce-1600", "detection", "score", 0, 5.0),  # another task: left out
    ]
    text = HEADER + "".join(f"s,{a},{t},{m},{s},{v},h,c,cpu,1\n" for a, t, m, s, v in rows)
    (tmp_path / "results.csv").write_text(text)
    assert read_scores(tmp_path / "results.csv", "cls-linear") == {
        "random": [25.0, 27.0],
        "ce-400": [30.0],
        "ce-1600": [33.0],
    }
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "steps_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_steps_curve_merges_several_results_folders(tmp_path):
    for name, arm in (("a", "ce-400"), ("b", "ce-6400")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.csv").write_text(
            HEADER + f"s,{arm},cls-linear,score,0,30.0,h,c,cpu,1\n"
        )
    out = tmp_path / "curve.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.is_file() and not (tmp_path / "a" / "steps_curve.png").exists()
