"""Torch's thread count, chosen from the CPUs this process may use and the jobs sharing them.

    from cebench.core.threads import set_threads, threads_note
    set_threads(cfg.train.threads)        # torch.set_num_threads(...) by the rule below
    print(threads_note(), file=sys.stderr)   # once per process: "threads: 2 (2 CPUs / 1 job; ...)"

OpenMP threads that outnumber the cores they get spin against each other: with one other busy
process on 2 cores, 20 pretraining steps took 62 s at torch's default threads and 0.8 s at one
(issue 15). torch's default is the machine's core count, whatever the affinity mask, the cgroup
quota or the other jobs say. The rule:

    threads = CPUs this process may use // concurrent jobs, at least 1

CPUs: `os.sched_getaffinity(0)` (taskset, Slurm, cgroup cpusets), lowered to the cgroup v2 CPU
quota (`cpu.max`, containers) when that is smaller. Jobs: `cebench bench --jobs N` runs N cells at
once and sets CEBENCH_JOBS=N in its workers; torchrun's LOCAL_WORLD_SIZE processes share one
machine too, so jobs = CEBENCH_JOBS x LOCAL_WORLD_SIZE. Data-loader workers use one thread each
(`data_worker_init`, the DataLoader's worker_init_fn).

OpenMP's wait policy: torch's libgomp threads spin (busy-wait) at the end of every parallel
region before they sleep. On a shared machine a spinning thread burns the time slice its partner
needs, and with one competing process a 2-thread step ran 6x slower than alone (1.5x with
OMP_WAIT_POLICY=PASSIVE; README, Speed). `passive_openmp()`, called by the `cebench` command
before torch is imported, sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets it
(CEBENCH_OMP_PASSIVE=0 keeps OpenMP's default).

Override, first found wins: an explicit setting (`cebench speed --threads`), the
environment variable CEBENCH_THREADS, OMP_NUM_THREADS (what OpenMP itself reads), then the rule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cebench.core.env import VARIABLES, env_number, parse_int
from cebench.core.errors import ConfigError

_SAID_ENV = "_CEBENCH_THREADS_SAID"  # inherited by child processes: they do not repeat the line
_STATE: dict[str, ThreadChoice | None] = {"last": None, "said": None}


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "setting", "CEBENCH_THREADS", "OMP_NUM_THREADS" or "auto"
    cpus: int
    jobs: int

    def line(self) -> str:
        if self.source == "auto":
            why = f"{self.cpus} CPUs / {self.jobs} job{'s' if self.jobs > 1 else ''}"
        else:
            why = f"from {self.source}; {self.cpus} CPUs available"
        return (
            f"threads: {self.threads} torch threads ({why}; CEBENCH_THREADS or --threads to change)"
        )


def choose_threads(cpus: int, jobs: int = 1) -> int:
    """The rule: CPUs // jobs, at least 1."""
    return max(1, cpus // max(1, jobs))


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs the cgroup v2 quota allows (`cpu.max`: "quota period" or "max period"), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: the affinity mask, lowered to the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(cpus, quota) if quota else cpus)


def default_workers(device_type: str, env: Mapping[str, str] | None = None) -> int:
    """Data-loader workers for `data.workers: -1`, from the CPUs this process may use divided by
    the processes sharing them (`jobs_from_env`). On the CPU the workers take cores from the
    training threads: min(4, CPUs). On a GPU the CPUs only feed it: min(8, CPUs - 1), one CPU
    left to the training process (an H200 machine with 16 CPUs decoded the paper configs' images
    at 426-748 img/s with 4 workers, 913-1280 with 8, against 3600-5000 img/s of training:
    benchmarks/README.md, "GPU"). The batches do not depend on the number of workers."""
    cpus = max(1, available_cpus() // jobs_from_env(os.environ if env is None else env))
    if device_type == "cuda":
        return max(1, min(8, cpus - 1))
    return min(4, cpus)


# torch's own limit is far lower than any int: torch.set_num_threads(99999) crashed the process
MAX_THREADS = int(VARIABLES["CEBENCH_THREADS"][2])
MAX_JOBS = int(VARIABLES["CEBENCH_JOBS"][2])
# worker processes of one command (data-loader workers, `data prepare` / `data synth --workers`):
# more is never faster, and 99999 would fork that many
MAX_WORKERS = 256


def check_workers(value: int, key: str, lowest: int = 1) -> None:
    """ConfigError unless lowest <= value <= MAX_WORKERS (refused, never clamped)."""
    if not lowest <= value <= MAX_WORKERS:
        raise ConfigError(f"{key} must be from {lowest} to {MAX_WORKERS}, got {value}")


def _positive(env: Mapping[str, str], name: str) -> int | None:
    if name in VARIABLES:
        value = env_number(name, env=env)
        return None if value is None else int(value)
    raw = env.get(name, "")
    if not raw.strip():
        return None
    hi = MAX_THREADS if name == "OMP_NUM_THREADS" else MAX_JOBS  # LOCAL_WORLD_SIZE: processes
    first = raw.split(",")[0]  # OMP_NUM_THREADS may be a list per nesting level
    return parse_int(name, first, 1, hi)


def jobs_from_env(env: Mapping[str, str]) -> int:
    """Processes sharing this machine's CPUs: CEBENCH_JOBS x LOCAL_WORLD_SIZE (1 when unset)."""
    return (_positive(env, "CEBENCH_JOBS") or 1) * (_positive(env, "LOCAL_WORLD_SIZE") or 1)


def resolve_threads(
    setting: int | None = None,
    *,
    jobs: int | None = None,
    cpus: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ThreadChoice:
    """The thread count and where it came from (precedence in the module doc); changes nothing."""
    env = os.environ if env is None else env
    cpus = available_cpus() if cpus is None else cpus
    jobs = jobs_from_env(env) if jobs is None else max(1, jobs)
    if setting is not None and setting != 0:
        if not 0 <= setting <= MAX_THREADS:
            raise ConfigError(
                f"threads must be from 1 to {MAX_THREADS} (0 = automatic), got {setting}"
            )
        return ThreadChoice(setting, "setting", cpus, jobs)
    for name in ("CEBENCH_THREADS", "OMP_NUM_THREADS"):
        value = _positive(env, name)
        if value is not None:
            return ThreadChoice(value, name, cpus, jobs)
    return ThreadChoice(choose_threads(cpus, jobs), "auto", cpus, jobs)


def set_threads(setting: int | None = None, *, jobs: int | None = None) -> ThreadChoice:
    """`torch.set_num_threads` by `resolve_threads`; remembered for `threads_note`."""
    import torch

    choice = resolve_threads(setting, jobs=jobs)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _STATE["last"] = choice
    return choice


def threads_note() -> str | None:
    """The line saying this process's choice, the first time it is asked for (None afterwards,
    when no choice was made, or when the parent process already said the same)."""
    choice = _STATE["last"]
    if choice is None or _STATE["said"] == choice:
        return None
    _STATE["said"] = choice
    if os.environ.get(_SAID_ENV) == str(choice.threads):
        return None
    os.environ[_SAID_ENV] = str(choice.threads)
    return choice.line()


def passive_openmp(env: dict[str, str] | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE (see module doc) unless it is set or CEBENCH_OMP_PASSIVE=0;
    effective only before torch is first imported. Returns whether it was set."""
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" in env or env_number("CEBENCH_OMP_PASSIVE", 1, env) == 0:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def data_worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: one intra-op thread per loader process (they decode images;
    more threads would only compete with the training process)."""
    import torch

    torch.set_num_threads(1)
