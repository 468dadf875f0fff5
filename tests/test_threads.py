"""Torch threads from the CPUs this process may use and the concurrent jobs (issue 15)."""

from __future__ import annotations

import pytest
import torch

import cebench.core.threads as T
from cebench.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    n = torch.get_num_threads()
    monkeypatch.setattr(T, "_STATE", {"last": None, "said": None})
    monkeypatch.delenv(T._SAID_ENV, raising=False)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "cpus,jobs,threads", [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 4, 4), (7, 2, 3), (1, 1, 1)]
)
def test_threads_are_cpus_over_jobs(cpus, jobs, threads):
    assert T.choose_threads(cpus, jobs) == threads
    assert T.resolve_threads(cpus=cpus, jobs=jobs, env={}) == T.ThreadChoice(
        threads, "auto", cpus, jobs
    )


def test_jobs_come_from_bench_and_torchrun():
    env = {"CEBENCH_JOBS": "2", "LOCAL_WORLD_SIZE": "2"}
    assert T.resolve_threads(cpus=16, env=env).threads == 4
    assert T.resolve_threads(cpus=16, env={"CEBENCH_JOBS": "3"}).threads == 5
    assert T.resolve_threads(cpus=16, jobs=8, env=env).threads == 2  # an explicit count wins


def test_override_precedence():
    env = {"CEBENCH_THREADS": "3", "OMP_NUM_THREADS": "5", "CEBENCH_JOBS": "2"}
    assert T.resolve_threads(6, cpus=16, env=env) == T.ThreadChoice(6, "setting", 16, 2)
    assert T.resolve_threads(None, cpus=16, env=env).source == "CEBENCH_THREADS"
    assert T.resolve_threads(0, cpus=16, env=env).threads == 3  # 0 = automatic
    del env["CEBENCH_THREADS"]
    assert T.resolve_threads(cpus=16, env=env) == T.ThreadChoice(5, "OMP_NUM_THREADS", 16, 2)
    assert T.resolve_threads(cpus=16, env={"OMP_NUM_THREADS": "4,2"}).threads == 4
    del env["OMP_NUM_THREADS"]
    assert T.resolve_threads(cpus=16, env=env).threads == 8
    for bad in ({"CEBENCH_THREADS": "0"}, {"OMP_NUM_THREADS": "many"}, {"CEBENCH_JOBS": "-1"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            T.resolve_threads(cpus=2, env=bad)
    with pytest.raises(ConfigError, match="threads"):
        T.resolve_threads(-1, cpus=2, env={})


def test_available_cpus_follow_affinity_and_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(T, "_cgroup_cpus", lambda: None)
    assert T.available_cpus() == 3
    monkeypatch.setattr(T, "_cgroup_cpus", lambda: 2)
    assert T.available_cpus() == 2
    monkeypatch.undo()
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert T._cgroup_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert T._cgroup_cpus(tmp_path) is None
    assert T._cgroup_cpus(tmp_path / "none") is None


def test_set_threads_applies_and_says_it_once(monkeypatch):
    monkeypatch.setenv("CEBENCH_THREADS", "1")
    torch.set_num_threads(2)
    choice = T.set_threads()
    assert torch.get_num_threads() == 1 and choice.source == "CEBENCH_THREADS"
    line = T.threads_note()
    assert line is not None and line.startswith("threads: 1 torch threads")
    assert T.threads_note() is None
    # a child process that inherits the environment and makes the same choice stays quiet
    monkeypatch.setattr(T, "_STATE", {"last": None, "said": None})
    T.set_threads()
    assert T.threads_note() is None


def test_data_worker_init_uses_one_thread():
    torch.set_num_threads(2)
    T.data_worker_init(0)
    assert torch.get_num_threads() == 1


def test_pretraining_loader_workers_get_one_thread(tmp_path):
    from _train_helpers import tiny_config, write_images

    from cebench.core.distributed import DistInfo
    from cebench.pretrain.trainer import Trainer, resolve_run

    cfg = tiny_config(write_images(tmp_path / "img", n=8), tmp_path / "run", ["data.workers=1"])
    loader = Trainer(resolve_run(cfg, DistInfo()), torch.device("cpu"), DistInfo())._loader()
    assert loader.worker_init_fn is T.data_worker_init


def test_passive_openmp_unless_set():
    env: dict[str, str] = {}
    assert T.passive_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not T.passive_openmp(env) and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"CEBENCH_OMP_PASSIVE": "0"}
    assert not T.passive_openmp(env) and "OMP_WAIT_POLICY" not in env


def test_the_cebench_command_sets_it_before_torch_runs(monkeypatch, capsys):
    from cebench.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("CEBENCH_OMP_PASSIVE", raising=False)
    assert main(["--version"]) == 0
    assert T.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # inherited by every process it starts


@pytest.mark.parametrize(
    "cpus,env,cpu_workers,cuda_workers",
    [
        (2, {}, 2, 1),  # this project's CI machine: as before on the CPU
        (16, {}, 4, 8),  # the H200 machine: 8 feed the GPU, 4 share the CPU with training
        (16, {"LOCAL_WORLD_SIZE": "2"}, 4, 7),  # two GPU processes: 8 CPUs each, one kept
        (16, {"CEBENCH_JOBS": "8"}, 2, 1),
        (1, {}, 1, 1),
    ],
)
def test_default_workers_from_cpus_jobs_and_device(
    monkeypatch, cpus, env, cpu_workers, cuda_workers
):
    monkeypatch.setattr(T, "available_cpus", lambda: cpus)
    assert T.default_workers("cpu", env) == cpu_workers
    assert T.default_workers("cuda", env) == cuda_workers


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    """data.workers=-1 picks a count per device; each batch is a function of (seed, step) alone."""
    from cebench.core.logger import read_jsonl
    from cebench.pretrain.train import run
    from tests._train_helpers import tiny_config, write_images

    data = write_images(tmp_path / "imgs", n=12)
    over = ["train.steps=4", "train.sample_every=0", "mask.kind=center"]
    runs = [
        run(tiny_config(data, tmp_path / f"w{w}", [*over, f"data.workers={w}"])) for w in (0, 2)
    ]
    a, b = (read_jsonl(r / "metrics.jsonl") for r in runs)
    assert [x["loss"] for x in a] == [x["loss"] for x in b]
