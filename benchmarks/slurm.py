"""The Slurm launcher of `cebench bench`: one Slurm job per cell, submitted through submitit.

    cebench bench --suite paper --launcher slurm --out results/paper     # submit, wait, tabulate
    cebench bench --suite paper --launcher slurm --no-wait               # submit and return
    cebench bench --suite paper --status                                 # done / running / queued / failed

Partition, account, time limits, GPUs and CPUs per kind of cell and extra sbatch options come
from the suite's `launcher:` block (`cebench.benchmarks.suite.LauncherSpec`).

Order: every missing cell is submitted at once; a cell whose dependency is itself queued or
running gets `--dependency=afterok:<its job>` and `--kill-on-invalid-dep=yes`. Submitting the whole
graph up front (rather than submitting a cell when its dependencies finish) lets the suite run
with nothing left on the login node (`--no-wait`), lets Slurm start a transfer job the moment its
pretraining job ends, and makes each job's queue age count from the start. A cell job exits
non-zero when its cell fails, so Slurm cancels the cells that wait on it.

Bookkeeping stays in the results folder: the job writes OUT/cells/<id>.json (or .error.json) as a
local run does; OUT/slurm/<id>.job records the job id and config hash at submission, and
OUT/slurm/logs/<job>_0_log.out is the job's log. A rerun asks `squeue` about the recorded jobs and
submits only the cells that are neither done nor queued nor running: a job that died, was
cancelled or timed out is submitted again, a pretraining cell resuming from its checkpoint.

Inside a job: SIGTERM (preemption, scancel) stops a pretraining cell after its step with a
checkpoint; USR2, which Slurm sends `signal_s` seconds before the time limit (`--signal`), does
the same and then `scontrol requeue`s the job, which resumes bit-exactly from that checkpoint.
A pretraining cell asking for nodes x procs > 1 runs one process per Slurm task with torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from submitit, joined by
`cebench.core.distributed.init_from_env` exactly as under torchrun. (The torchrun agent itself is
not used inside a job: Slurm signals every process of the job, and the agent would pass the
preemption signal on a second time, which aborts the checkpoint.)
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cebench.benchmarks.suite import Cell, LauncherSpec, Suite
from cebench.core.errors import ConfigError
from cebench.core.io import atomic_write_text, inside

# squeue states of a job that is over (anything else listed is queued or running)
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}
GRACE_S = 5.0  # a job must look ended this long before its cell counts as failed
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"}


class CellFailed(Exception):
    """Raised at the end of a cell job whose cell failed, so that its Slurm job fails."""


# --- the job: what runs on the compute node --------------------------------------------------


@dataclass
class CellJob:
    """One cell, pickled by submitit and called on the node (on every task of the job)."""

    out: str
    suite: Suite
    cell: Cell
    resolved: dict[str, Any]
    config_hash: str
    code_version: str
    executor: Any
    runner_cls: Any  # cebench.benchmarks.runner.Runner: execute_cell, stop_cell, work_stamp
    code_fingerprint: str = ""

    def __call__(self) -> str:
        import submitit

        env = submitit.JobEnvironment()
        rank, world = env.global_rank, env.num_tasks
        if world > 1:  # torchrun's variables, from the Slurm tasks of this job
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        _set_threads()
        requeue = _install_signal_handlers(self.runner_cls.stop_cell)
        if rank != 0:
            return self._other_rank()
        res = self.runner_cls.execute_cell(
            self.executor, self.cell, self.resolved, self._work(), self.config_hash
        )
        writer = _writer(self)
        if res.get("interrupted"):
            if requeue["asked"]:  # time limit or preemption notice: continue in a new allocation
                subprocess.run(["scontrol", "requeue", env.job_id], check=False, timeout=60)
                return f"requeued after signal {res['interrupted']}"
            kept = " (checkpoint kept: rerun to continue)" if self.cell.kind == "pretrain" else ""
            writer._write_error(
                self.cell,
                f"stopped by signal {res['interrupted']}{kept}",
                wall=res.get("wall_time_s", 0.0),
            )
            raise CellFailed(f"{self.cell.id}: stopped by signal {res['interrupted']}")
        if not res["ok"]:
            writer._write_error(
                self.cell, res["error"], res.get("traceback", ""), res.get("wall_time_s", 0.0)
            )
            raise CellFailed(f"{self.cell.id}: {res['error']}")
        writer._write_cell(self.cell, res)
        return "done"

    def _work(self) -> str:
        return str(inside(Path(self.out), "runs", self.cell.id))

    def _other_rank(self) -> str:
        """Ranks > 0 of a multi-process pretraining cell: train, write nothing (rank 0 writes)."""
        from cebench.core.checkpoints import CKPT, NEXT, PREV
        from cebench.core.config import from_dict
        from cebench.pretrain.config import PretrainConfig
        from cebench.pretrain.train import TrainingInterrupted, run

        work = Path(self._work())
        cfg = from_dict(PretrainConfig, self.resolved)
        stamp = work / self.runner_cls.work_stamp
        # rank 0 keeps the checkpoint exactly when the stamp matches (runner._execute)
        same = stamp.is_file() and stamp.read_text() == self.config_hash
        cfg.train.resume = same and any((work / n).exists() for n in (CKPT, NEXT, PREV))
        try:
            run(cfg)
        except TrainingInterrupted as e:
            return f"stopped by signal {e.signum}"
        return "done"


def _set_threads() -> None:
    import torch

    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        torch.set_num_threads(int(cpus))


def _install_signal_handlers(stop_cell: Any) -> dict[str, bool]:
    """SIGTERM/SIGINT stop the cell (a pretraining cell saves first); USR2 does the same and asks
    for a requeue. Replaces submitit's handlers, which would requeue without a checkpoint."""
    asked = {"asked": False}
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_cell)

    def usr2(signum: int, frame: Any) -> None:
        asked["asked"] = True
        handler = signal.getsignal(signal.SIGTERM)  # the trainer's flag while it trains
        if callable(handler):
            handler(signal.SIGTERM, frame)

    signal.signal(signal.SIGUSR2, usr2)
    return asked


def _writer(job: CellJob) -> Any:
    """A Runner with just what `_write_cell` / `_write_error` read, so that a job writes its
    record exactly as a local run does."""
    w = job.runner_cls.__new__(job.runner_cls)
    w.suite, w.code_version = job.suite, job.code_version
    w.out = Path(job.out)
    w.cells_dir = inside(w.out, "cells")
    w.hashes = {job.cell.id: job.config_hash}
    w.fingerprints = {job.cell.id: job.code_fingerprint}
    w.resolved = {job.cell.id: job.resolved}
    return w


# --- bookkeeping in OUT/slurm ----------------------------------------------------------------


def job_file(out: Path, cell_id: str) -> Path:
    return inside(out, "slurm", f"{cell_id}.job")


def read_job(out: Path, cell_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(job_file(out, cell_id).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def squeue(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of the jobs Slurm still lists (ended ones may be absent)."""
    if not job_ids:
        return {}
    fmt = ["-h", "-o", "%i|%T|%r"]
    try:
        proc = subprocess.run(
            ["squeue", *fmt, "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60
        )
        if proc.returncode:  # an id Slurm has forgotten: list this user's jobs instead
            proc = subprocess.run(
                ["squeue", *fmt, "-u", getpass.getuser()],
                capture_output=True,
                text=True,
                timeout=60,
            )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"cannot ask Slurm about jobs (squeue): {e}") from None
    if proc.returncode:
        raise ConfigError(f"squeue failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    states = {}
    for line in proc.stdout.splitlines():
        jid, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if jid in job_ids:
            states[jid] = (state, reason)
    return states


def active_jobs(out: Path, cell_ids: list[str]) -> dict[str, dict[str, Any]]:
    """{cell id: its job record with 'state' and 'reason'} for the cells whose recorded job is
    still queued or running (a job that has written its cell's record is only exiting)."""
    records = {
        c: r
        for c in cell_ids
        if (r := read_job(out, c)) is not None
        and _read(inside(out, "cells", f"{c}.json")).get("config_hash") != r.get("config_hash")
    }
    if not records:
        return {}
    states = squeue(sorted({r["job_id"] for r in records.values()}))
    active = {}
    for cid, rec in records.items():
        state, reason = states.get(rec["job_id"], ("", ""))
        if state and state not in ENDED:
            active[cid] = dict(rec, state=state, reason=reason)
    return active


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM wait until the block ends (a job must not be submitted unrecorded)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- the submitting side ---------------------------------------------------------------------


class SlurmLauncher:
    """Submits a runner's missing cells as Slurm jobs and (with wait=True) follows them."""

    kind = "slurm"

    def __init__(self, spec: LauncherSpec, wait: bool = True) -> None:
        self.spec, self.wait = spec, wait
        self.submitted: list[str] = []
        self.in_flight: dict[str, str] = {}  # cell id -> job id

    def run(self, runner: Any, todo: list[Cell], outcome: Any) -> None:
        """Submit every cell of `todo` not already queued or running; then wait for them."""
        out = runner.out
        busy = active_jobs(out, [c.id for c in todo])
        skipped: set[str] = set()
        for cell in todo:
            if cell.id in busy:
                rec = busy[cell.id]
                if rec.get("config_hash") != runner.hashes[cell.id]:
                    skipped.add(cell.id)
                    runner.log(
                        f"{cell.id}: job {rec['job_id']} ({rec['state'].lower()}) runs an older "
                        f"config; not submitted again until it ends (or `scancel {rec['job_id']}`)"
                    )
                    continue
                self.in_flight[cell.id] = rec["job_id"]
                runner.log(f"{cell.id}: already {rec['state'].lower()} as job {rec['job_id']}")
                continue
            if any(d in skipped for d in cell.depends):
                skipped.add(cell.id)
                continue
            with _signals_deferred():
                self.in_flight[cell.id] = self.submit(runner, cell)
            self.submitted.append(cell.id)
        runner.log(
            f"slurm: submitted {len(self.submitted)} job(s), {len(self.in_flight) - len(self.submitted)} "
            f"already queued or running; logs in {out / 'slurm' / 'logs'}"
        )
        if not self.wait:
            if self.in_flight:
                runner.log(
                    "slurm: not waiting (--no-wait); watch with `cebench bench ... --status`, "
                    "rerun the same command to collect the tables"
                )
            return
        try:
            self.follow(runner, outcome)
        finally:
            left = [c for c in self.in_flight if c not in outcome.ran and c not in outcome.failed]
            if left:
                runner.log(
                    f"slurm: {len(left)} job(s) go on in Slurm ({', '.join(left)}); "
                    "rerun the same command to follow them again"
                )

    def _executor(self, runner: Any, cell: Cell, depends: list[str]) -> Any:
        import submitit

        spec = self.spec
        res = spec.resources(cell.kind)
        ex = submitit.SlurmExecutor(folder=runner.out / "slurm" / "logs", max_num_timeout=10)
        extra: dict[str, Any] = {"requeue": True, "kill-on-invalid-dep": "yes"}
        if depends:
            extra["dependency"] = "afterok:" + ":".join(depends)
        if spec.account:
            extra["account"] = spec.account
        extra.update({str(k).replace("_", "-"): v for k, v in spec.sbatch.items()})
        params: dict[str, Any] = {
            "job_name": cell.id,
            "time": res.minutes(),
            "nodes": res.nodes,
            "ntasks_per_node": res.processes(),
            "cpus_per_task": res.cpus,
            "signal_delay_s": spec.signal_s,
            "stderr_to_stdout": True,
            "setup": list(spec.setup) or None,
            "additional_parameters": extra,
        }
        if spec.partition:
            params["partition"] = spec.partition
        if spec.qos:
            params["qos"] = spec.qos
        if res.gpus:
            params["gpus_per_node"] = res.gpus
        if res.mem:
            params["mem"] = res.mem
        ex.update_parameters(**params)
        return ex

    def submit(self, runner: Any, cell: Cell) -> str:
        depends = [self.in_flight[d] for d in cell.depends if d in self.in_flight]
        job = CellJob(
            out=str(runner.out),
            suite=runner.suite,
            cell=cell,
            resolved=runner.resolved[cell.id],
            config_hash=runner.hashes[cell.id],
            code_fingerprint=runner.fingerprints.get(cell.id, ""),
            code_version=runner.code_version,
            executor=runner.executor,
            runner_cls=type(runner),
        )
        try:
            submitted = self._executor(runner, cell, depends).submit(job)
        except Exception as e:  # sbatch refused it: one line, naming the cell
            msg = str(e).strip().splitlines()
            raise ConfigError(
                f"slurm: submitting {cell.id} failed: {msg[-1] if msg else type(e).__name__}"
            ) from None
        job_id = str(submitted.job_id)
        # the previous failure is history now; the job writes a new one if it fails again
        (runner.cells_dir / f"{cell.id}.error.json").unlink(missing_ok=True)
        record = {
            "cell": cell.id,
            "job_id": job_id,
            "config_hash": runner.hashes[cell.id],
            "depends_on_jobs": depends,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "log": str(submitted.paths.stdout).replace("%t", "0"),
        }
        atomic_write_text(job_file(runner.out, cell.id), json.dumps(record, indent=1))
        after = f" after job {', '.join(depends)}" if depends else ""
        runner.log(f"{cell.id}: submitted as job {job_id}{after}")
        return job_id

    def follow(self, runner: Any, outcome: Any) -> None:
        """Poll squeue until every job in flight has ended; record each cell as it finishes."""
        pending = dict(self.in_flight)
        gone_since: dict[str, float] = {}  # cell -> when its job was first seen ended or absent
        while pending:
            states = squeue(sorted(set(pending.values())))
            for cid, jid in list(pending.items()):
                cell = runner.by_id[cid]
                if runner.state(cell) == "done":
                    pending.pop(cid)
                    outcome.ran.append(cid)
                    outcome.cpu_s += _read(runner.cells_dir / f"{cid}.json").get("cpu_time_s", 0.0)
                    runner.write_outputs(figures=False)
                    runner.log(f"[{len(outcome.ran)}/{len(self.in_flight)}] {cid} done (job {jid})")
                    continue
                state = states.get(jid, ("", ""))[0]
                if state and state not in ENDED:
                    gone_since.pop(cid, None)
                    continue
                # a record may reach a network file system late, and a requeue is not atomic
                if time.time() - gone_since.setdefault(cid, time.time()) < GRACE_S:
                    continue
                pending.pop(cid)
                self._failed(runner, cell, jid, state, outcome)
                for other, ojid in list(pending.items()):
                    if cid in runner.by_id[other].depends:
                        subprocess.run(["scancel", ojid], capture_output=True, timeout=60)
                        pending.pop(other)
                        runner._write_error(runner.by_id[other], f"dependency {cid} failed")
                        outcome.failed[other] = f"dependency {cid} failed"
            if pending:
                time.sleep(self.spec.poll_s)

    def _failed(self, runner: Any, cell: Cell, jid: str, state: str, outcome: Any) -> None:
        err_file = runner.cells_dir / f"{cell.id}.error.json"
        rec = read_job(runner.out, cell.id) or {}
        try:
            error = json.loads(err_file.read_text())["error"]
        except (OSError, json.JSONDecodeError, KeyError):
            error = f"Slurm job {jid} ended ({state or 'gone from squeue'}) without a result"
            runner._write_error(cell, f"{error}; log {rec.get('log', '?')}")
        outcome.failed[cell.id] = error
        runner.log(f"{cell.id} FAILED (job {jid}): {error}  log {rec.get('log', '?')}")


# --- status ----------------------------------------------------------------------------------


def status_lines(runner: Any) -> list[str]:
    """One line per selected cell: done, running (job), queued (job, reason), failed (the
    one-line reason and the log), stale or todo. Read-only: runs nothing, submits nothing."""
    out = runner.out
    ids = [c.id for c in runner.selected]
    has_jobs = (out / "slurm").is_dir()
    active = active_jobs(out, ids) if has_jobs else {}
    lines = []
    for cell in runner.selected:
        state = runner.state(cell)
        job = read_job(out, cell.id) if has_jobs else None
        if job is not None and job.get("config_hash") != runner.hashes[cell.id]:
            job = None  # a job of another config: says nothing about this one
        where = f"log {job['log']}" if job else ""
        if state == "done":
            detail = f"job {job['job_id']}" if job else ""
        elif cell.id in active:
            rec = active[cell.id]
            state = "queued" if rec["state"] in QUEUED else "running"
            reason = rec.get("reason", "")
            detail = f"job {rec['job_id']}" + (
                f" ({reason})" if state == "queued" and reason not in ("", "None") else ""
            )
            if rec.get("config_hash") != runner.hashes[cell.id]:
                detail += " (another config)"
            where = f"log {rec['log']}"
        elif (err := _read(runner.cells_dir / f"{cell.id}.error.json")).get(
            "config_hash"
        ) == runner.hashes[cell.id]:
            state, detail = "failed", (err.get("error") or "?").splitlines()[0]
            where = where or f"see {runner.cells_dir / (cell.id + '.error.json')}"
        elif job is not None:
            state, detail = "failed", f"job {job['job_id']} ended without a result"
        else:
            detail, where = "", ""
        lines.append(f"{state:8s} {cell.id:34s} {detail}{'  ' + where if where else ''}".rstrip())
    return lines


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def refuse_if_jobs_active(out: Path, cell_ids: list[str]) -> None:
    """A local run must not run cells that Slurm jobs are running into the same folder."""
    if not (Path(out) / "slurm").is_dir():
        return
    try:
        active = active_jobs(Path(out), cell_ids)
    except ConfigError:
        return  # no Slurm here: the recorded jobs belong to another machine
    if active:
        cid, rec = next(iter(active.items()))
        raise ConfigError(
            f"{len(active)} cell(s) of {out} are queued or running as Slurm jobs ({cid}: job "
            f"{rec['job_id']}); follow them with --launcher slurm, or scancel them first"
        )
