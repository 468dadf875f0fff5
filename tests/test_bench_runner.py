"""The bench runner's own logic with an injected executor: caching, failures, config edits, kills,
--only, results.csv / table.md contents and suite YAML errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cebench.benchmarks.runner import Runner
from cebench.benchmarks.suite import load_suite, plan_cells
from cebench.core.errors import ConfigError

SUITE = textwrap.dedent("""
    name: toy
    seeds: [0, 1, 2]
    budgets: {steps: 5}
    pretrain: {steps: "{budgets.steps}", seed: "{seed}", out: "{work}"}
    transfer: {encoder: "{encoder}", seed: "{seed}"}
    arms:
      - {name: rand, label: Random, method: random, encoder: tiny}
      - {name: ce, label: Context encoder, method: context-encoder, mask: center, pretrain: {lr: 0.1}}
    tasks:
      - {name: cls, label: Cls, kind: classify, metric: score, config: {lr: 0.01}}
      - {name: seg, label: Seg, kind: segment, metric: miou, config: {lr: 0.02}}
""")
# hand-chosen metric values: (arm, task) -> per seed
VALUES = {
    ("rand", "cls"): [40.0, 42.0, 44.0],
    ("ce", "cls"): [50.0, 53.0, 56.0],
    ("rand", "seg"): [10.0, 10.0, 13.0],
    ("ce", "seg"): [20.0, 21.0, 25.0],
}


class FakeExecutor:
    """Records each call in OUT/calls.log; fails the cells named in `fail`; SIGKILLs itself on `kill`."""

    def __init__(self, fail: tuple[str, ...] = (), kill: str = "") -> None:
        self.fail, self.kill = fail, kill

    def prepare(self, suite, out_dir: Path) -> None:
        self.out = out_dir

    def resolve(self, cell) -> dict:
        return dict(cell.config)

    def run(self, cell, resolved: dict, work: Path) -> dict:
        with open(work.parent.parent / "calls.log", "a") as f:
            f.write(cell.id + "\n")
        if cell.id == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if cell.id in self.fail:
            raise RuntimeError(f"synthetic failure in {cell.id}")
        if cell.kind == "pretrain":
            (work / "encoder.pt").write_text("weights")
            return {
                "metrics": {"loss": 0.5},
                "device": "cpu:test",
                "artifacts": {"run_dir": str(work)},
            }
        metric = "score" if cell.task == "cls" else "miou"
        vals = VALUES[(cell.arm, cell.task)]
        return {"metrics": {metric: vals[cell.seed % len(vals)]}, "device": "cpu:test"}


def _suite_file(tmp_path: Path, text: str = SUITE) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(text)
    return p


def _run(tmp_path, overrides=(), executor=None, only=None, rerun=None):
    suite = load_suite(_suite_file(tmp_path), list(overrides))
    runner = Runner(
        suite,
        tmp_path / "out",
        executor or FakeExecutor(),
        only=only,
        rerun=rerun,
        log=lambda m: None,
    )
    return runner, runner.run()


def _calls(tmp_path) -> list[str]:
    p = tmp_path / "out" / "calls.log"
    return p.read_text().split() if p.exists() else []


def test_plan_dependencies_and_placeholders(tmp_path):
    suite = load_suite(_suite_file(tmp_path))
    cells = {c.id: c for c in plan_cells(suite, tmp_path / "out")}
    assert len(cells) == 3 + 2 * 2 * 3  # ce pretraining x 3 seeds + arms x tasks x seeds
    t = cells["ce.cls.s1"]
    assert t.depends == ("ce.pretrain.s1",)
    assert t.config == {
        "encoder": str((tmp_path / "out" / "runs" / "ce.pretrain.s1").resolve()),
        "seed": 1,
        "lr": 0.01,
    }
    assert cells["rand.seg.s2"].config["encoder"] == "random:tiny"
    assert cells["ce.pretrain.s0"].config["steps"] == 5  # a whole placeholder keeps its type


def test_cells_cached_and_skipped_on_rerun(tmp_path):
    _, first = _run(tmp_path)
    assert len(first.ran) == 15 and not first.failed
    rec = json.loads((tmp_path / "out" / "cells" / "ce.cls.s0.json").read_text())
    for key in ("config_hash", "code_version", "seed", "wall_time_s", "device", "metrics"):
        assert key in rec
    assert rec["metrics"] == {"score": 50.0} and rec["device"] == "cpu:test"
    _, second = _run(tmp_path)
    assert second.ran == [] and len(second.cached) == 15
    assert len(_calls(tmp_path)) == 15  # nothing ran the second time


def test_failed_cell_reported_and_rest_go_on(tmp_path):
    _, out = _run(tmp_path, executor=FakeExecutor(fail=("ce.pretrain.s1", "rand.cls.s0")))
    assert set(out.failed) == {"ce.pretrain.s1", "rand.cls.s0", "ce.cls.s1", "ce.seg.s1"}
    assert "dependency ce.pretrain.s1 failed" in out.failed["ce.cls.s1"]
    assert len(out.ran) == 15 - 4
    err = json.loads((tmp_path / "out" / "cells" / "rand.cls.s0.error.json").read_text())
    assert "synthetic failure" in err["error"] and "Traceback" in err["traceback"]
    # the rerun retries only the failed cells, and clears the error files
    _, again = _run(tmp_path)
    assert sorted(again.ran) == sorted(out.failed) and not again.failed
    assert not list((tmp_path / "out" / "cells").glob("*.error.json"))


def test_edited_config_reruns_only_affected_cells(tmp_path):
    _run(tmp_path)
    _, task_edit = _run(tmp_path, ["tasks.seg.config.lr=0.5"])
    assert sorted(task_edit.ran) == sorted(
        f"{a}.seg.s{s}" for a in ("rand", "ce") for s in range(3)
    )
    _, arm_edit = _run(tmp_path, ["tasks.seg.config.lr=0.5", "arms.ce.pretrain.lr=0.2"])
    # pretraining changed -> its transfer cells too (their hash includes the dependency's)
    assert sorted(arm_edit.ran) == sorted(
        f"ce.{t}.s{s}" for t in ("pretrain", "cls", "seg") for s in range(3)
    )
    _, extended = _run(
        tmp_path, ["tasks.seg.config.lr=0.5", "arms.ce.pretrain.lr=0.2", "seeds=[0,1,2,3]"]
    )
    assert all(c.endswith(".s3") for c in extended.ran) and len(extended.ran) == 5


def test_only_pattern_brings_dependencies(tmp_path):
    _, out = _run(tmp_path, only=["ce.seg.*"])
    assert sorted(out.ran) == sorted(
        [f"ce.seg.s{s}" for s in range(3)] + [f"ce.pretrain.s{s}" for s in range(3)]
    )
    with pytest.raises(ConfigError, match="matches no cell"):
        _run(tmp_path, only=["nothing-like-this"])


def test_rerun_runs_cached_cells_and_their_dependants_from_scratch(tmp_path):
    """--rerun after a code fix (config hashes unchanged): the matching cells and the cells that
    read their output run again; a pretraining work dir starts empty (not resumed); the old
    record is gone before the cell runs, so an interrupted rerun leaves it to do."""
    _run(tmp_path)
    work = tmp_path / "out" / "runs" / "ce.pretrain.s1"
    (work / "checkpoint.pt").write_text("old run")  # what a resume would continue
    _, out = _run(tmp_path, only=["rand.cls.s0"], rerun=["ce.pretrain.s1"])
    assert sorted(out.ran) == ["ce.cls.s1", "ce.pretrain.s1", "ce.seg.s1"]
    assert out.cached == ["rand.cls.s0"]
    assert not (work / "checkpoint.pt").exists() and (work / "encoder.pt").is_file()
    _, killed = _run(
        tmp_path, executor=FakeExecutor(fail=("ce.pretrain.s2",)), rerun=["ce.pretrain.s2"]
    )
    assert set(killed.failed) == {"ce.pretrain.s2", "ce.cls.s2", "ce.seg.s2"}
    for cell in ("ce.pretrain.s2", "ce.cls.s2", "ce.seg.s2"):  # not done with the old result
        assert not (tmp_path / "out" / "cells" / f"{cell}.json").exists()
    _, again = _run(tmp_path)
    assert sorted(again.ran) == ["ce.cls.s2", "ce.pretrain.s2", "ce.seg.s2"]
    with pytest.raises(ConfigError, match="--rerun .* matches no cell"):
        _run(tmp_path, rerun=["nothing-like-this"])


def test_rerun_brings_the_dependencies_of_its_cells(tmp_path):
    """--rerun of a transfer cell outside --only: its pretraining cell is selected too (run when
    missing, cached when done), as --only does; without it a worker pool never starts the cell."""
    runner, out = _run(tmp_path, only=["rand.cls.s0"], rerun=["ce.cls.s1"])
    assert out.ran.index("ce.pretrain.s1") < out.ran.index("ce.cls.s1")
    assert sorted(out.ran) == ["ce.cls.s1", "ce.pretrain.s1", "rand.cls.s0"]
    runner, out = _run(tmp_path, only=["rand.cls.s0"], rerun=["ce.cls.s1"])
    assert out.ran == ["ce.cls.s1"]
    assert sorted(out.cached) == ["ce.pretrain.s1", "rand.cls.s0"]


def test_csv_and_markdown_match_cell_metrics(tmp_path):
    _run(tmp_path)
    out = tmp_path / "out"
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
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
    assert {r["threads"] for r in rows} == {str(torch.get_num_threads())}
    for (arm, task), vals in VALUES.items():
        got = sorted(
            (int(r["seed"]), float(r["value"]))
            for r in rows
            if r["arm"] == arm and r["task"] == task
        )
        assert got == list(enumerate(vals))
    assert sum(r["task"] == "pretrain" and r["metric"] == "time_s" for r in rows) == 3
    md = (out / "table.md").read_text()
    # mean +- sample std by hand: ce cls 50,53,56 -> 53 +- 3; rand seg 10,10,13 -> 11 +- sqrt(3)
    assert "**53.0 ± 3.0**" in md and "42.0 ± 2.0" in md
    assert f"11.0 ± {statistics.stdev([10, 10, 13]):.1f}" in md and "**22.0 ± 2.6**" in md
    assert md.startswith("Produced by: `cebench bench --suite toy`")
    rand_row = next(line for line in md.splitlines() if line.startswith("| Random |"))
    assert rand_row.split("|")[2].strip() == "-"  # no pretraining time for the random arm


class SleepExecutor(FakeExecutor):
    """Writes its worker's pid, then sleeps: stands for a long cell when the runner is killed."""

    def run(self, cell, resolved: dict, work: Path) -> dict:
        (work.parent.parent / f"pid.{os.getpid()}").write_text(cell.id)
        import time

        time.sleep(60)
        return {}


class KillExecutor(FakeExecutor):
    def __init__(self) -> None:
        super().__init__(kill="ce.cls.s0")


def test_sigkill_mid_suite_then_resume(tmp_path):
    suite_file = _suite_file(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_bench_runner import KillExecutor
        from cebench.benchmarks.runner import Runner
        from cebench.benchmarks.suite import load_suite
        Runner(load_suite({str(suite_file)!r}), {str(tmp_path / "out")!r}, KillExecutor(), log=print).run()
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    done_before = sorted(p.name for p in (tmp_path / "out" / "cells").glob("*.json"))
    # 3 pretraining cells + rand.* of seed 0; the killed cell left no record
    assert "ce.cls.s0.json" not in done_before and len(done_before) == 5
    with open(tmp_path / "out" / "results.csv") as f:
        assert all(len(line.split(",")) == 13 for line in f.read().splitlines())
    open(tmp_path / "out" / "calls.log", "w").close()
    _, resumed = _run(tmp_path)
    assert len(resumed.cached) == 5 and len(resumed.ran) == 10 and not resumed.failed
    assert "ce.pretrain.s0" not in _calls(tmp_path)


def test_suite_yaml_errors(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'arms\[1\].maks'.*valid keys here: .*arms\[1\].mask"
    ):
        load_suite(_suite_file(tmp_path, SUITE.replace("mask: center", "maks: center")))
    with pytest.raises(
        ConfigError, match=r"arms\[1\].method' must be one of \['random', 'random-rescaled'"
    ):
        load_suite(
            _suite_file(tmp_path, SUITE.replace("method: context-encoder", "method: jigsaw"))
        )
    with pytest.raises(ConfigError, match="unknown suite key 'sedes'; valid keys: .*seeds"):
        load_suite(_suite_file(tmp_path), ["sedes=[1]"])
    with pytest.raises(ConfigError, match="has no item named 'nope'"):
        load_suite(_suite_file(tmp_path), ["arms.nope.pretrain.lr=1"])
    with pytest.raises(ConfigError, match="unknown placeholder {budget.steps}"):
        plan_cells(
            load_suite(_suite_file(tmp_path, SUITE.replace("{budgets.steps}", "{budget.steps}"))),
            tmp_path,
        )
    with pytest.raises(ConfigError, match="unknown suite 'nosuch'; built-in suites: .*default"):
        load_suite("nosuch")


def test_worker_pool_runs_and_survives_a_dying_worker(tmp_path):
    suite = load_suite(_suite_file(tmp_path), ["seeds=[0]"])
    runner = Runner(
        suite, tmp_path / "out", FakeExecutor(kill="rand.seg.s0"), jobs=2, log=lambda m: None
    )
    out = runner.run()
    assert "rand.seg.s0" in out.failed and "worker process died" in out.failed["rand.seg.s0"]
    # cells in flight beside the dead worker may fail with it; everything else ran
    assert set(out.ran) | set(out.failed) == {c.id for c in runner.cells}
    assert len(out.failed) <= 2


def test_the_launcher_owns_the_signal_handling(tmp_path):
    """The runner installs its launcher's SIGINT/SIGTERM handler while the cells run; the local
    launcher's is the runner's stop_cell in process, else a forward to its worker processes."""
    from cebench.benchmarks.local import LocalLauncher
    from cebench.benchmarks.runner import Outcome

    class SignalledLauncher(LocalLauncher):
        seen: list[int] = []

        def signal_handler(self, runner, outcome):
            def handler(signum, frame):
                self.seen.append(signum)
                outcome.stopped_by = signum

            return handler

        def run(self, runner, todo, outcome):
            os.kill(os.getpid(), signal.SIGTERM)
            super().run(runner, todo, outcome)

    suite = load_suite(_suite_file(tmp_path), ["seeds=[0]"])
    launcher = SignalledLauncher(1)
    runner = Runner(suite, tmp_path / "out", FakeExecutor(), launcher=launcher, log=lambda m: None)
    before = signal.getsignal(signal.SIGTERM)
    out = runner.run()
    assert launcher.seen == [signal.SIGTERM] and out.stopped_by == signal.SIGTERM
    assert out.ran == [] and signal.getsignal(signal.SIGTERM) == before
    # the local launcher: in process, the runner's stop_cell; with workers, a forward to each
    assert LocalLauncher(1).signal_handler(runner, Outcome()) is Runner.stop_cell
    pool = LocalLauncher(2)
    outcome = Outcome()
    handler = pool.signal_handler(runner, outcome)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pool.workers = type("Pool", (), {"_processes": {worker.pid: worker}})()
        handler(signal.SIGTERM, None)
        assert worker.wait(timeout=30) == -signal.SIGTERM and outcome.stopped_by == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
            handler(signal.SIGINT, None)
    finally:
        worker.kill()
        worker.wait()


def test_killed_runner_leaves_no_worker_behind(tmp_path):
    suite_file = _suite_file(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_bench_runner import SleepExecutor
        from cebench.benchmarks.runner import Runner
        from cebench.benchmarks.suite import load_suite
        Runner(load_suite({str(suite_file)!r}), {str(tmp_path / "out")!r}, SleepExecutor(), jobs=2).run()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    out = tmp_path / "out"
    deadline = time.time() + 60
    while len(list(out.glob("pid.*"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    pids = [int(p.name.split(".")[1]) for p in out.glob("pid.*")]
    assert len(pids) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while pids and time.time() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.2)
    assert not pids, "pool workers outlived the killed runner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_change_of_the_generated_data_spec_reruns_the_cells(tmp_path):
    """Cells read the generated data through the same paths whatever its spec: the spec is part
    of every cell's hash, so a changed spec never reuses cells computed on the old data."""
    from cebench.benchmarks.cells import CellExecutor
    from cebench.benchmarks.runner import Runner
    from cebench.benchmarks.suite import load_suite

    def hashes(overrides):
        runner = Runner(load_suite("mini", overrides), tmp_path, CellExecutor(), log=lambda m: None)
        runner.resolve_all()
        return runner.hashes

    base, same = hashes([]), hashes([])
    other = hashes(["data.synth.object_scale=1.6"])
    assert base == same
    assert all(base[c] != other[c] for c in base)


def test_reuse_takes_finished_cells_of_the_same_hash_from_another_folder(tmp_path, monkeypatch):
    """--reuse A: a suite that extends A's (one more arm) runs only the new arm's cells; the
    reused records carry this suite's name and their work dirs come along."""
    a = tmp_path / "a"
    suite = load_suite(_suite_file(tmp_path))
    Runner(suite, a, FakeExecutor(), log=lambda m: None).run()
    text = SUITE.replace("name: toy", "name: toy2").replace(
        "\ntasks:\n",
        "\n  - {name: ce2, label: CE 2, method: context-encoder, mask: center}\ntasks:\n",
    )
    p = tmp_path / "toy2.yaml"
    p.write_text(text)
    b = tmp_path / "b"
    log: list[str] = []
    ex = FakeExecutor()
    for task in ("cls", "seg"):
        monkeypatch.setitem(VALUES, ("ce2", task), VALUES[("ce", task)])
    out = Runner(load_suite(p), b, ex, log=log.append, reuse=[a]).run()
    assert sorted(out.ran) == sorted(
        f"ce2.{t}.s{s}" for t in ("pretrain", "cls", "seg") for s in range(3)
    )
    assert any("15 cells reused" in m for m in log), log  # 3 pretraining + 2 x 2 x 3 transfer
    rec = json.loads((b / "cells" / "ce.pretrain.s0.json").read_text())
    assert rec["suite"] == "toy2" and rec["reused_from"] == str(a.resolve())
    assert (b / "runs" / "ce.pretrain.s0" / "encoder.pt").read_text() == "weights"
    with pytest.raises(ConfigError, match="overlaps the results folder"):
        Runner(load_suite(p), b, ex, reuse=[b / "runs"])
    with pytest.raises(ConfigError, match="not a results folder"):
        Runner(load_suite(p), b, ex, reuse=[tmp_path / "nothing"])
