"""The Slurm launcher of `cebench bench`: the launcher block, and the `mini` suite on a REAL Slurm.

The cluster tests start munged, slurmctld and slurmd on this machine (tests/slurm_cluster.py) and
are skipped, with the reason, where the packages are missing or we are not root (CI installs them:
.ci/run). Run only these: `pytest -q tests/test_slurm.py`; the multi-process + requeue test is in
the slow set (`make test-slow`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cebench.benchmarks.suite import load_suite, slurm_minutes
from cebench.cli import main as cebench
from cebench.core.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import SlurmCluster, missing  # noqa: E402

PRETRAIN, PROBE = "ce-center.pretrain.s0", "ce-center.cls-linear.s0"
TIMING = ("img_per_s",)  # metrics that measure the machine, not the result

SUITE = """\
_base_: mini
name: mini
launcher:
  kind: slurm
  poll_s: 0.3
  signal_s: 30
  sbatch: {comment: cebench-test}
  pretrain: {cpus: 1, time: "10"}
  transfer: {cpus: 1, time: "0:10:00"}
"""


# --- the launcher block (no Slurm needed) ----------------------------------------------------


@pytest.mark.parametrize(
    "text,minutes",
    [("90", 90), ("90:30", 91), ("4:00:00", 240), ("1-0", 1440), ("1-12:30", 2190), ("0:0:59", 1)],
)
def test_slurm_time_limits_in_minutes(text, minutes):
    assert slurm_minutes(text) == minutes


@pytest.mark.parametrize(
    "override,names",
    [
        ("launcher.transfer.procs=2", "launcher.transfer"),
        ("launcher.pretrain.time=1:00:00", "launcher.pretrain.time"),  # YAML: the number 3600
        ("launcher.pretrain.time='soon'", "launcher.pretrain.time"),
        ("launcher.inpaint.cpus=0", "launcher.inpaint.cpus"),
        ("launcher.pretrain.mem=lots", "launcher.pretrain.mem"),
        ("launcher.sbatch.dependency=afterok:1", "dependency"),
        ("launcher.kind=pbs", "launcher.kind"),
    ],
)
def test_bad_launcher_block_is_one_line_error(override, names):
    with pytest.raises(ConfigError) as e:
        load_suite("mini", [override])
    assert names in str(e.value) and "\n" not in str(e.value)


def test_launcher_block_from_a_suite_file(tmp_path):
    (tmp_path / "s.yaml").write_text(SUITE)
    spec = load_suite(tmp_path / "s.yaml").launcher
    assert spec.kind == "slurm" and spec.sbatch == {"comment": "cebench-test"}
    assert spec.pretrain.minutes() == 10 and spec.transfer.minutes() == 10
    assert spec.pretrain.processes() == 1
    spec = load_suite("mini", ["launcher.pretrain.gpus=4", "launcher.pretrain.nodes=2"]).launcher
    assert spec.pretrain.processes() == 4 and spec.kind == "local"  # one process per GPU


def test_cli_refuses_slurm_only_flags_locally(tmp_path, capsys):
    assert cebench(["bench", "--suite", "mini", "--out", str(tmp_path), "--no-wait"]) == 2
    assert "--no-wait needs --launcher slurm" in capsys.readouterr().err
    args = ["bench", "--suite", "mini", "--out", str(tmp_path), "--launcher", "slurm"]
    assert cebench([*args, "--jobs", "2"]) == 2
    assert "--jobs is for the local launcher" in capsys.readouterr().err


def test_status_without_slurm_lists_todo_cells(tmp_path, capsys):
    assert cebench(["bench", "--suite", "mini", "--out", str(tmp_path), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["todo", PRETRAIN], ["todo", PROBE]]


# --- a real Slurm ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(cluster.conf))  # sbatch/squeue here, and the jobs, use it
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        mp.undo()


def _job(out: Path, cell: str) -> dict:
    return json.loads((out / "slurm" / f"{cell}.job").read_text())


def _state(job_id: str) -> str:
    proc = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    return proc.stdout.strip()


def _wait_for(what, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while not what():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what.__doc__ or what}")
        time.sleep(0.2)


def _cell(out: Path, cell: str) -> dict:
    return json.loads((out / "cells" / f"{cell}.json").read_text())


def _same_results(a: Path, b: Path, cells: list[str], rel: float = 1e-6) -> None:
    for cell in cells:
        ra, rb = _cell(a, cell), _cell(b, cell)
        assert ra["config_hash"] == rb["config_hash"], cell
        ma = {k: v for k, v in ra["metrics"].items() if k not in TIMING}
        mb = {k: v for k, v in rb["metrics"].items() if k not in TIMING}
        assert ma.keys() == mb.keys() and ma, cell
        for k in ma:
            assert math.isclose(ma[k], mb[k], rel_tol=rel, abs_tol=1e-9), (cell, k, ma[k], mb[k])


def test_mini_suite_on_slurm_equals_local_and_rerun_resubmits_only_the_cancelled_cell(
    slurm, tmp_path, capsys
):
    local, out = tmp_path / "local", tmp_path / "slurm"
    assert cebench(["bench", "--suite", "mini", "--out", str(local)]) == 0
    (tmp_path / "suite.yaml").write_text(SUITE)
    bench = ["bench", "--suite", str(tmp_path / "suite.yaml"), "--out", str(out)]

    # 1. the whole suite through Slurm (the suite's launcher block), waiting for it
    capsys.readouterr()
    assert cebench(bench) == 0
    err = capsys.readouterr().err
    assert "submitted 2 job(s)" in err and "2 ran, 0 cached, 0 failed" in err
    pre, probe = _job(out, PRETRAIN), _job(out, PROBE)
    assert probe["depends_on_jobs"] == [pre["job_id"]]  # afterok on the pretraining job
    script = (out / "slurm" / "logs" / f"{probe['job_id']}_submission.sh").read_text()
    assert f"--dependency=afterok:{pre['job_id']}" in script and "--comment=cebench-test" in script
    assert "--time=10" in script and "--signal=USR2@30" in script
    _same_results(out, local, [PRETRAIN, PROBE])
    assert (out / "results.csv").read_text() and (out / "table.md").is_file()
    assert cebench([*bench, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].split()[:4] == ["done", PRETRAIN, "job", pre["job_id"]]
    assert status[1].split()[:2] == ["done", PROBE]

    # 2. a longer probe: only the probe cell is submitted (pretraining is cached) ...
    longer = [*bench, "--set", "budgets.transfer_epochs=300000"]
    assert cebench([*longer, "--no-wait"]) == 0
    err = capsys.readouterr().err
    assert "submitted 1 job(s)" in err, err
    first = _job(out, PROBE)["job_id"]
    assert _job(out, PRETRAIN) == pre
    # ... and never again while it is queued or running; a local run into OUT is refused
    assert cebench([*longer, "--no-wait"]) == 0
    err = capsys.readouterr().err
    assert "submitted 0 job(s), 1 already queued or running" in err, err
    assert _job(out, PROBE)["job_id"] == first
    # --rerun of a cell whose job is queued or running: refused (the job runs the old code)
    assert cebench([*longer, "--no-wait", "--rerun", PROBE]) == 2
    assert "scancel them first" in capsys.readouterr().err
    assert (out / "cells").is_dir() and _job(out, PROBE)["job_id"] == first
    assert (
        cebench(
            [
                "bench",
                "--suite",
                "mini",
                "--out",
                str(out),
                "--set",
                "budgets.transfer_epochs=300000",
            ]
        )
        == 2
    )
    assert f"job {first}" in capsys.readouterr().err

    # 3. kill it while it runs; --status says failed, with the log
    _wait_for(lambda: _state(first) == "RUNNING")
    subprocess.run(["scancel", first], check=True)
    _wait_for(lambda: _state(first) in ("", "CANCELLED", "COMPLETED", "FAILED"))
    assert cebench([*longer, "--status"]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert lines[PROBE].startswith("failed") and f"{first}_0_log.out" in lines[PROBE]
    assert lines[PRETRAIN].startswith("done")

    # 4. the rerun submits that cell only
    assert cebench([*longer, "--no-wait"]) == 0
    err = capsys.readouterr().err
    assert "submitted 1 job(s), 0 already queued or running" in err, err
    second = _job(out, PROBE)["job_id"]
    assert second != first and _job(out, PRETRAIN) == pre
    assert cebench([*longer, "--status"]) == 0
    probe_line = [x for x in capsys.readouterr().out.splitlines() if PROBE in x][0]
    assert probe_line.split()[0] in ("queued", "running") and f"job {second}" in probe_line
    subprocess.run(["scancel", second], check=True)


@pytest.mark.slow
def test_two_task_pretraining_cell_requeued_by_usr2_resumes_bit_exactly(slurm, tmp_path, capsys):
    """Two Slurm tasks (torchrun's environment from submitit) train one cell; USR2 (the time
    limit's notice) makes it checkpoint and requeue; the requeued job resumes, and its final losses
    equal, bit for bit, an uninterrupted two-process torchrun run of the same config."""
    (tmp_path / "suite.yaml").write_text(SUITE)
    out = tmp_path / "slurm"
    bench = ["bench", "--suite", str(tmp_path / "suite.yaml"), "--out", str(out)]
    bench += ["--set", "budgets.pretrain_steps=150", "--only", "pretrain"]
    bench += ["--set", "launcher.pretrain.procs=2"]
    assert cebench([*bench, "--no-wait"]) == 0
    job = _job(out, PRETRAIN)["job_id"]
    run_dir = out / "runs" / PRETRAIN

    def training() -> bool:
        """ten steps logged"""
        metrics = run_dir / "metrics.jsonl"
        return metrics.is_file() and len(metrics.read_text().splitlines()) >= 10

    _wait_for(training)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _wait_for(lambda: _state(job) == "PENDING")  # requeued (Slurm delays its start)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    capsys.readouterr()
    assert cebench(bench) == 0  # follows the queued job instead of submitting another
    err = capsys.readouterr().err
    assert "submitted 0 job(s)" in err and f" as job {job}" in err, err
    log = Path(_job(out, PRETRAIN)["log"]).read_text()
    assert "resuming" in log and log.count("Starting with JobEnvironment") == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2

    ref = tmp_path / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc_per_node", "2", "-m", "cebench.pretrain.train"]
    subprocess.run(
        [*torchrun, "--config", str(run_dir / "config.yaml"), "--out", str(ref)],
        check=True,
        capture_output=True,
    )
    want = json.loads((ref / "summary.json").read_text())["final"]
    got = _cell(out, PRETRAIN)["metrics"]
    assert json.loads((ref / "summary.json").read_text())["steps"] == 150 and want["loss_rec"] > 0
    assert got["loss_rec"] == want["loss_rec"] and got["loss"] == want["loss"]
