"""`cebench bench`: run a suite's grid of cells, cache each finished cell, tabulate the results.

    cebench bench --suite default --out results/default
    cebench bench --suite paper --dry-run                      # every cell, tiny data, minimal budgets
    cebench bench --suite default --only 'ce-*' --set seeds=[0] --set budgets.pretrain_steps=50
    cebench bench --suite default --list                       # cells and their state; runs nothing

Each finished cell is written atomically to OUT/cells/<cell-id>.json with its provenance (cell
hash, code fingerprint, code version, seed, wall time, device, torch threads, float format) and is
not run again while its cell hash is the same, so an interrupted or extended suite continues where
it stopped. The cell hash covers the resolved config, the built-in data's spec, the cell's
dependencies' hashes and the fingerprint of the code the cell runs (`cebench.core.fingerprint`:
the normalised source of the modules it can reach), so a code change that can move a number
reruns the cells it can move, and their dependants. A failed cell writes
OUT/cells/<cell-id>.error.json, the other cells go on (its dependants are reported as failed too)
and the exit status is 1. OUT/results.csv, OUT/table.md and OUT/figures/ are regenerated from the
cell files, never appended to.

One `cebench bench` writes into OUT at a time (OUT/.cebench.lock; a second one is refused, naming
the first one's pid). SIGINT / SIGTERM stop the whole suite: a pretraining cell saves its
checkpoint, the finished cells are kept, the exit status is 130 / 143, and rerunning the same
command continues, resuming the interrupted pretraining cell from its checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cebench.benchmarks.local import LocalLauncher
from cebench.benchmarks.suite import Cell, Suite, load_suite, plan_cells, suite_meta
from cebench.core.config import config_hash
from cebench.core.errors import CebenchError, ConfigError
from cebench.core.io import atomic_write_text, inside
from cebench.core.lock import folder_lock
from cebench.core.provenance import git_commit
from cebench.core.threads import MAX_JOBS


class Executor(Protocol):
    """Runs cells. `resolve` checks a cell's config against the target config class and returns it
    fully resolved (JSON-able; hashed for caching); `run` does the work in `work` and returns
    {"metrics": {name: float}, "artifacts": {...}, "device": str}. Must be picklable for --jobs > 1."""

    def prepare(self, suite: Suite, out_dir: Path) -> None: ...
    def resolve(self, cell: Cell) -> dict[str, Any]: ...
    # optional: `fingerprint(cell) -> str`, the code the cell runs (part of its hash)
    def run(self, cell: Cell, resolved: dict[str, Any], work: Path) -> dict[str, Any]: ...


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the cells that ran (their cost on otherwise idle cores)
    stopped_by: int | None = None  # the signal that stopped the suite
    interrupted: list[str] = field(default_factory=list)  # cells stopped half-way (resume on rerun)


class CellStopped(BaseException):
    """Raised by the suite's SIGINT/SIGTERM handler in a cell that has no handler of its own."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


_IN_CELL = {"now": False, "worker": False}
STAMP = (
    ".cell-config-hash"  # in a pretraining cell's work dir: the config its checkpoint belongs to
)


def _stop_cell(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: stop the running cell (a pretraining cell's own handler saves first); an
    idle worker process ignores it."""
    if _IN_CELL["now"] or not _IN_CELL["worker"]:
        raise CellStopped(signum)


def _stop_signal(e: BaseException) -> int | None:
    """The signal number if `e` means "stopped by a signal", else None."""
    from cebench.pretrain.trainer import TrainingInterrupted

    if isinstance(e, (CellStopped, TrainingInterrupted)):
        return e.signum
    return None


def code_version() -> str:
    """The git commit of the checkout (-dirty with local changes), else the package version."""
    from cebench.core.provenance import package_version

    return git_commit() or f"cebench-{package_version()}"


def _portable(value: Any, out_dir: str) -> Any:
    """The config with OUT written as $OUT, so the hash does not depend on where OUT lives."""
    return json.loads(json.dumps(value, default=str).replace(out_dir, "$OUT"))


def _matches(cell_id: str, patterns: list[str]) -> bool:
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            if fnmatch.fnmatchcase(cell_id, pat):
                return True
        elif pat in cell_id:
            return True
    return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _execute(
    executor: Executor, cell: Cell, resolved: dict[str, Any], work: str, config_hash: str = ""
) -> dict[str, Any]:
    """Run one cell and never raise: the result or the error comes back as data (worker-safe).
    A signal comes back as {"ok": False, "interrupted": signum}."""
    import torch

    t0, c0 = time.time(), time.process_time()
    _IN_CELL["now"] = True
    try:
        stamp = Path(work) / STAMP
        # a pretraining cell stopped by a signal resumes from its checkpoint if its config is the
        # same; any other half-done directory is stale
        keep = bool(config_hash) and stamp.is_file() and stamp.read_text() == config_hash
        if not (keep and cell.kind == "pretrain"):
            shutil.rmtree(work, ignore_errors=True)
            Path(work).mkdir(parents=True, exist_ok=True)
            if cell.kind == "pretrain" and config_hash:
                atomic_write_text(stamp, config_hash)
        result = executor.run(cell, resolved, Path(work))
        # CPU time of this process (all its threads): the cell's cost without other jobs' contention
        return {
            "ok": True,
            "result": result,
            "wall_time_s": time.time() - t0,
            "cpu_time_s": time.process_time() - c0,
            "threads": torch.get_num_threads(),  # numbers differ slightly across thread counts
        }
    except BaseException as e:  # noqa: B036 -- a cell's failure must not stop the suite
        signum = _stop_signal(e)
        if signum is not None:
            return {
                "ok": False,
                "interrupted": signum,
                "error": f"stopped by signal {signum}",
                "wall_time_s": time.time() - t0,
            }
        if isinstance(e, KeyboardInterrupt):
            raise
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
            "traceback": traceback.format_exc(),
            "wall_time_s": time.time() - t0,
        }
    finally:
        _IN_CELL["now"] = False


def _init_worker(jobs: int) -> None:
    import threading

    from cebench.core.threads import set_threads

    # threads = CPUs / jobs (cebench.core.threads); the cells' own set_threads() finds the same
    # through CEBENCH_JOBS, and so do processes a cell starts
    os.environ["CEBENCH_JOBS"] = str(jobs)
    set_threads(jobs=jobs)
    parent = os.getppid()
    # signals come from the runner only (it forwards each one once): a Ctrl-C at the terminal
    # would otherwise reach every worker as well, and a second signal aborts a checkpoint save
    os.setpgrp()
    _IN_CELL["worker"] = True
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _stop_cell)

    def exit_with_parent() -> None:  # a killed runner must not leave workers writing into OUT
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


class Runner:
    # what a launcher's job process calls; cebench.benchmarks.slurm takes them from the runner
    # it is handed, so that it does not import this module (which imports it)
    execute_cell = staticmethod(_execute)
    init_worker = staticmethod(_init_worker)  # a local worker process's start
    stop_cell = staticmethod(_stop_cell)
    work_stamp = STAMP

    def __init__(
        self,
        suite: Suite,
        out_dir: str | Path,
        executor: Executor,
        *,
        jobs: int = 1,
        only: list[str] | None = None,
        rerun: list[str] | None = None,
        command: str = "",
        overrides: list[str] | None = None,
        log=print,
        launcher: Any = None,
        reuse: list[str | Path] | None = None,
    ) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {jobs}")
        self.suite, self.executor, self.jobs = suite, executor, jobs
        # an object whose run(runner, todo, outcome) runs the cells: this machine's
        # (cebench.benchmarks.local.LocalLauncher, --jobs; the default) or Slurm's
        # (cebench.benchmarks.slurm.SlurmLauncher)
        self.launcher = launcher if launcher is not None else LocalLauncher(jobs)
        self.out = Path(out_dir).resolve()
        # --reuse: other results folders whose finished cells of the same hash count as ours
        self.reuse = [Path(d).resolve() for d in reuse or []]
        for d in self.reuse:
            if d == self.out or d.is_relative_to(self.out) or self.out.is_relative_to(d):
                raise ConfigError(f"--reuse {d} overlaps the results folder {self.out}")
            if not (d / "cells").is_dir():
                raise ConfigError(f"--reuse {d}: not a results folder (no {d / 'cells'})")
        self.cells_dir = inside(self.out, "cells")
        self.command = command or f"cebench bench --suite {suite.name}"
        self.overrides = list(overrides or [])  # the --set keys, kept in suite.json
        self.log = log
        # more_seeds: the seeds after the suite's own, up to more_seeds.max in all; their cells are
        # planned (and hashed) now, and run only for the arms that still need them (_more_seeds)
        first = max(suite.seeds) + 1
        self.extra_seeds = list(range(first, first + suite.more_seeds.max - len(suite.seeds)))
        self.planned = plan_cells(
            dataclasses.replace(suite, seeds=[*suite.seeds, *self.extra_seeds]), self.out
        )
        self.cells = [c for c in self.planned if c.seed in set(suite.seeds)]
        self.by_id = {c.id: c for c in self.planned}
        self.only = list(only or [])
        self.selected = self._select(self.only)
        self.rerun = self._rerun(rerun or [])
        self.resolved: dict[str, dict[str, Any]] = {}
        self.hashes: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}  # the code each cell runs ('' if not known)
        self.code_version = code_version()

    def _select(self, patterns: list[str]) -> list[Cell]:
        if not patterns:
            return list(self.cells)
        wanted = {c.id for c in self.cells if _matches(c.id, patterns)}
        if not wanted:
            raise ConfigError(
                f"--only {patterns} matches no cell; cells look like "
                f"{self.cells[0].id}, {self.cells[-1].id}"
            )
        wanted = self._with_dependencies(wanted)  # a selected cell brings the cells it needs
        return [c for c in self.cells if c.id in wanted]

    def _with_dependencies(self, ids: set[str]) -> set[str]:
        """`ids` and every cell they need, transitively."""
        out, stack = set(ids), list(ids)
        while stack:
            for dep in self.by_id[stack.pop()].depends:
                if dep not in out:
                    out.add(dep)
                    stack.append(dep)
        return out

    def _rerun(self, patterns: list[str]) -> set[str]:
        """--rerun: the matching cells and every cell that depends on them, run again from
        scratch although cached (for what a cell hash does not cover: another torch, a changed
        dataset file); added to the selection (cells of more_seeds' extra seeds are forgotten
        and run again if a round asks for them)."""
        if not patterns:
            return set()
        forced = {c.id for c in self.planned if _matches(c.id, patterns)}
        if not forced:
            raise ConfigError(
                f"--rerun {patterns} matches no cell; cells look like "
                f"{self.cells[0].id}, {self.cells[-1].id}"
            )
        grew = True
        while grew:  # dependants of a rerun cell read its new output
            more = {c.id for c in self.planned if forced & set(c.depends)} - forced
            forced |= more
            grew = bool(more)
        # and the cells they need (cached if done), as with --only
        base = {c.id for c in self.cells}
        selected = {c.id for c in self.selected} | self._with_dependencies(forced & base)
        self.selected = [c for c in self.cells if c.id in selected]
        return forced

    def _forget(self, cell: Cell) -> None:
        """A --rerun cell: its record, error and work-dir stamp go before anything runs, so an
        interrupted rerun leaves it to do (not done with the old result), and its pretraining
        run starts again instead of resuming the old checkpoint."""
        for name in (f"{cell.id}.json", f"{cell.id}.error.json"):
            (self.cells_dir / name).unlink(missing_ok=True)
        (Path(self._work(cell)) / STAMP).unlink(missing_ok=True)

    def resolve_all(self) -> None:
        """Check every cell's config before running anything; hash it with its dependencies' hashes."""
        synth = self.suite.data.synth
        fingerprint = getattr(self.executor, "fingerprint", None)
        for cell in self.planned:
            try:
                resolved = self.executor.resolve(cell)
            except CebenchError as e:
                raise ConfigError(f"cell {cell.id}: {e}") from None
            self.resolved[cell.id] = resolved
            code = fingerprint(cell) if fingerprint is not None else ""
            self.fingerprints[cell.id] = code
            self.hashes[cell.id] = config_hash(
                {
                    "kind": cell.kind,
                    "task_kind": cell.task_kind,
                    "seed": cell.seed,
                    "config": _portable(resolved, str(self.out)),
                    "depends": [self.hashes[d] for d in cell.depends],
                    # the generated data's spec: its paths stay the same when it changes
                    **({"synth": dataclasses.asdict(synth)} if synth is not None else {}),
                    # the code it runs: a change that can move its numbers makes it stale
                    **({"code": code} if code else {}),
                }
            )

    def state(self, cell: Cell) -> str:
        rec = _read_json(self.cells_dir / f"{cell.id}.json")
        if rec is not None and rec.get("config_hash") == self.hashes[cell.id]:
            return "done"
        if rec is not None:
            return "stale"
        return "failed" if (self.cells_dir / f"{cell.id}.error.json").exists() else "todo"

    def _write_cell(self, cell: Cell, res: dict[str, Any]) -> None:
        result = res["result"] or {}
        rec = {
            "cell": cell.id,
            "suite": self.suite.name,
            "kind": cell.kind,
            "arm": cell.arm,
            "task": cell.task,
            "task_kind": cell.task_kind,
            "seed": cell.seed,
            "config_hash": self.hashes[cell.id],
            "code_fingerprint": self.fingerprints.get(cell.id, ""),
            "code_version": self.code_version,
            "device": result.get("device") or _default_device(),
            "threads": res.get("threads"),
            "precision": result.get("precision") or "",
            "wall_time_s": round(res["wall_time_s"], 3),
            "cpu_time_s": round(res.get("cpu_time_s", 0.0), 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "metrics": {k: float(v) for k, v in (result.get("metrics") or {}).items()},
            "artifacts": result.get("artifacts") or {},
            "config": self.resolved[cell.id],
            "depends": list(cell.depends),
        }
        atomic_write_text(
            self.cells_dir / f"{cell.id}.json", json.dumps(rec, indent=1, default=str)
        )
        (self.cells_dir / f"{cell.id}.error.json").unlink(missing_ok=True)

    def _write_error(self, cell: Cell, error: str, tb: str = "", wall: float = 0.0) -> None:
        rec = {
            "cell": cell.id,
            "config_hash": self.hashes[cell.id],
            "error": error,
            "traceback": tb,
            "wall_time_s": round(wall, 3),
            "code_version": self.code_version,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(self.cells_dir / f"{cell.id}.error.json", json.dumps(rec, indent=1))

    def run(self) -> Outcome:
        """Run the selected cells; holds OUT's lock, and stops at SIGINT/SIGTERM (see the module
        docstring; `Outcome.stopped_by` is then set)."""
        with folder_lock(self.out, "cebench bench"):
            for sub in ("cells", "runs", "data", "figures"):  # no symlink may lead out of OUT
                inside(self.out, sub)
            return self._run_locked()

    def _run_locked(self) -> Outcome:
        t_start = time.time()
        self.executor.prepare(self.suite, self.out)
        self.resolve_all()
        atomic_write_text(
            self.out / "suite.json",
            json.dumps(
                dict(suite_meta(self.suite), command=self.command, overrides=self.overrides),
                indent=1,
            ),
        )
        outcome = Outcome()
        todo = []
        for cell in self.planned:
            if cell.id in self.rerun:
                self._forget(cell)
        reused = self._reuse_cells()
        for cell in self.selected:
            if self.state(cell) == "done":
                outcome.cached.append(cell.id)
            else:
                todo.append(cell)
        if reused:
            self.log(
                f"bench {self.suite.name}: {reused} cells reused from {len(self.reuse)} folder(s)"
            )
        self.log(
            f"bench {self.suite.name}: {len(self.selected)} cells, {len(outcome.cached)} cached, "
            f"{len(todo)} to run -> {self.out}"
        )
        self._progress_t0, self._times = time.time(), {}
        self._total = len(todo)
        main_thread = threading.current_thread() is threading.main_thread()
        # SIGINT/SIGTERM while the cells run: the launcher's handler (LocalLauncher: stop the
        # cell in this process, or forward to its workers); a launcher without one stops the
        # cell running in this process
        ask = getattr(self.launcher, "signal_handler", None)
        handler = ask(self, outcome) if ask is not None else _stop_cell
        old = (
            {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
            if main_thread
            else {}
        )
        try:
            self._dispatch(todo, outcome)
            # more_seeds: rounds of one more seed for the arms whose comparison is undecided
            while (
                self.extra_seeds
                and outcome.stopped_by is None
                and not outcome.failed
                and getattr(self.launcher, "wait", True)
                and (more := self._more_seeds())
            ):
                self.selected += more
                self._reuse_cells(more)
                todo = [c for c in more if self.state(c) != "done"]
                outcome.cached += [c.id for c in more if c not in todo]
                self._total += len(todo)
                seeds = sorted({c.seed for c in more})
                self.log(
                    f"bench {self.suite.name}: seed {', '.join(map(str, seeds))} for "
                    f"{', '.join(sorted({c.arm for c in more}))} (undecided against the "
                    f"reference arm): {len(more)} cells, {len(todo)} to run"
                )
                self._dispatch(todo, outcome)
        except CellStopped as e:  # a signal between two cells
            outcome.stopped_by = e.signum
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.write_outputs()
        outcome.wall_s = time.time() - t_start
        return outcome

    def _reuse_cells(self, cells: list[Cell] | None = None) -> int:
        """--reuse: a cell of `cells` (default: the selected ones) not done here whose record in a
        reused folder has the same cell hash (the same config, data, dependencies and code) is
        copied here, with its work directory (a pretraining run that cells here may still need);
        returns how many."""
        count = 0
        for cell in self.selected if cells is None else cells:
            if cell.id in self.rerun or self.state(cell) == "done":
                continue
            for d in self.reuse:
                rec = _read_json(d / "cells" / f"{cell.id}.json")
                if rec is None or rec.get("config_hash") != self.hashes[cell.id]:
                    continue
                src, dst = d / "runs" / cell.id, Path(self._work(cell))
                if src.is_dir():
                    shutil.rmtree(dst, ignore_errors=True)
                    shutil.copytree(src, dst, symlinks=True)
                rec = json.loads(json.dumps(rec).replace(str(d), str(self.out)))
                rec.update(suite=self.suite.name, reused_from=str(d))
                atomic_write_text(
                    self.cells_dir / f"{cell.id}.json", json.dumps(rec, indent=1, default=str)
                )
                (self.cells_dir / f"{cell.id}.error.json").unlink(missing_ok=True)
                count += 1
                break
        return count

    def _dispatch(self, todo: list[Cell], outcome: Outcome) -> None:
        self.launcher.run(self, todo, outcome)

    def _more_seeds(self) -> list[Cell]:
        """The cells of the next seed for every arm that has a column whose difference from the
        reference arm is undecided (`stats.Comparison.decided`), and for the reference arm; []
        when every comparison is decided or no undecided arm has a seed left."""
        from cebench.benchmarks.stats import compare, reference_arm
        from cebench.benchmarks.tables import build_columns, records_to_rows, values

        meta = suite_meta(self.suite)
        ref = reference_arm(meta)
        if not ref:
            return []
        rows = records_to_rows(self.records())
        spec = self.suite.more_seeds
        undecided = {
            c.arm
            for c in compare(rows, meta, build_columns(rows, meta), values)
            if c.arm != ref and c.n_ref and not c.decided(self.suite.alpha, spec.min_effect)
        }
        chosen = {c.id for c in self.selected}
        # --only: rounds stay within the selection (its arms, and its cells' patterns)
        undecided &= {c.arm for c in self.selected}
        new: set[str] = set()
        for arm in sorted(undecided | {ref}):
            have = {c.seed for c in self.selected if c.arm == arm}
            seed = next((s for s in self.extra_seeds if s not in have), None)
            if seed is None:
                continue
            new |= {c.id for c in self.planned if c.arm == arm and c.seed == seed} - chosen
        if self.only:
            new = self._with_dependencies({i for i in new if _matches(i, self.only)}) - chosen
        if not {self.by_id[i].arm for i in new} - {ref}:
            return []  # no undecided arm can take another seed
        return [c for c in self.planned if c.id in new]

    def _blocked(self, cell: Cell, outcome: Outcome) -> str | None:
        bad = [d for d in cell.depends if d in outcome.failed]
        return f"dependency {bad[0]} failed" if bad else None

    def _record(self, cell: Cell, res: dict[str, Any], outcome: Outcome) -> None:
        if res.get("interrupted"):
            outcome.stopped_by = outcome.stopped_by or res["interrupted"]
            outcome.interrupted.append(cell.id)
            self.log(
                f"{cell.id} stopped by signal {res['interrupted']} after "
                f"{res.get('wall_time_s', 0.0):.1f}s (not failed: rerun to continue it)"
            )
            return
        if res["ok"]:
            self._write_cell(cell, res)
            outcome.ran.append(cell.id)
            outcome.cpu_s += res.get("cpu_time_s", 0.0)
            self._times.setdefault(cell.kind, []).append(res["wall_time_s"])
        else:
            self._write_error(
                cell, res["error"], res.get("traceback", ""), res.get("wall_time_s", 0.0)
            )
            outcome.failed[cell.id] = res["error"]
        self.write_outputs(figures=False)  # results.csv always mirrors the finished cells
        self._progress(cell, res, outcome)

    def _progress(self, cell: Cell, res: dict[str, Any], outcome: Outcome) -> None:
        done = len(outcome.ran) + len(outcome.failed)
        left = self._total - done
        pending = [
            c
            for c in self.selected
            if c.id not in outcome.ran and c.id not in outcome.failed and c.id not in outcome.cached
        ]
        # left-over time per kind from this session's mean; kinds not yet timed make it a lower bound
        eta = sum(sum(ts) / len(ts) for c in pending if (ts := self._times.get(c.kind))) / self.jobs
        untimed = sorted({c.kind for c in pending if c.kind not in self._times})
        eta_text = _fmt(eta) + (f" + {'/'.join(untimed)} cells not yet timed" if untimed else "")
        status = "ok" if res["ok"] else f"FAILED ({res['error']})"
        self.log(
            f"[{done}/{self._total}] {cell.id} {status} {res.get('wall_time_s', 0.0):.1f}s | "
            f"left {left} | elapsed {_fmt(time.time() - self._progress_t0)} | eta {eta_text}"
        )

    def _work(self, cell: Cell) -> str:
        return str(inside(self.out, "runs", cell.id))

    def records(self) -> list[dict[str, Any]]:
        """The finished cells of this suite whose hash is current (config and code): the base
        seeds' cells, and more_seeds' extra cells only where this run's rounds selected them
        (an extra seed left from an earlier run must not decide a round or fill a table alone)."""
        out = []
        chosen = {c.id for c in self.selected}
        for cell in self.planned:
            if cell.seed not in self.suite.seeds and cell.id not in chosen:
                continue
            rec = _read_json(self.cells_dir / f"{cell.id}.json")
            if rec is not None and rec.get("config_hash") == self.hashes.get(cell.id):
                out.append(rec)
        return out

    def write_outputs(self, figures: bool = True) -> None:
        from cebench.benchmarks.render import render_all
        from cebench.benchmarks.tables import records_to_rows, write_csv

        rows = records_to_rows(self.records())
        write_csv(rows, self.out / "results.csv")
        if figures:
            render_all(
                [self.out], self.out, command=self.command, latex=True, figures=True, log=self.log
            )


def _default_device() -> str:
    from cebench.core.device import describe, pick_device

    return describe(pick_device("auto"))


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--suite",
        required=True,
        help="built-in suite name (default, methods, paper, mini) or a YAML file",
    )
    p.add_argument(
        "--out", default=None, help="results directory (default results/<suite>[-dry-run])"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="apply the suite's dry_run section (tiny generated data, minimal budgets)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cells whose id matches (glob, or substring; repeatable); "
        "ids are ARM.TASK.sSEED, TASK = pretrain | inpaint | a transfer task",
    )
    p.add_argument(
        "--rerun",
        action="append",
        metavar="PATTERN",
        help="run these cells again although cached, from scratch, and every cell that depends "
        "on them (glob or substring, repeatable): after a code fix, which leaves config hashes alone",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a suite key, e.g. seeds=[0,1], budgets.pretrain_steps=50, "
        "arms.ce-center.pretrain.optim.lr=1e-3, data.paths.voc2007=/data/VOC2007",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes (default: the suite's 'jobs', else 1 = in-process)",
    )
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default=None,
        help="where cells run (default: the suite's launcher.kind, else local): local = this "
        "machine (--jobs), slurm = one Slurm job per cell via submitit (README: Running on a cluster)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="--launcher slurm: submit the missing cells and return (watch with --status; "
        "rerun the same command to collect the tables)",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="show each cell: done, running / queued (Slurm job id), failed (reason, log), todo; "
        "runs nothing",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the cells, their state and resolved settings (splits, sizes, heads, lr, masks, AP, rescale); run nothing",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="DIR",
        help="take finished cells with the same cell hash (config, data and code) from another "
        "results folder instead of running them (repeatable), e.g. --suite methods --reuse "
        "results/default",
    )
    p.add_argument(
        "--readme",
        default=None,
        metavar="FILE",
        help="after the run, copy OUT/table.md into FILE's '<!-- cebench-table OUT/table.md -->' "
        "block (make bench: README.md)",
    )
    return p


def _refuse_writing_into_the_data(suite: Suite, out: Path) -> None:
    """The suite's own data paths (`data.paths` not built from `{out}` / `{data.synth}`, e.g. a
    VOC root of the user's) are inputs: --out may not be, hold or lie inside one
    (`refuse_overlap`)."""
    from cebench.benchmarks.suite import data_env
    from cebench.core.lock import refuse_overlap

    env = data_env(suite, out.expanduser().resolve())
    given = {
        f"data.paths.{name}": env[f"data.{name}"]
        for name, raw in suite.data.paths.items()
        if "{out}" not in raw and "{data.synth}" not in raw
    }
    refuse_overlap(out, given)


def main(args: argparse.Namespace) -> int:
    from cebench.benchmarks.cells import CellExecutor, cell_settings

    suite = load_suite(args.suite, args.overrides, dry_run=args.dry_run)
    # the suite's name is a config value: it may only name a folder inside results/
    out = (
        Path(args.out)
        if args.out
        else inside("results", f"{suite.name}{'-dry-run' if args.dry_run else ''}")
    )
    command = (
        "cebench bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else f"cebench bench --suite {args.suite}"
    )
    _refuse_writing_into_the_data(suite, out)
    jobs = args.jobs if args.jobs is not None else suite.jobs
    if not 1 <= jobs <= MAX_JOBS:  # refused, not bent: 0 or -1 never runs as 1
        flag = "--jobs" if args.jobs is not None else f"suite {args.suite}: jobs"
        raise ConfigError(f"{flag} must be from 1 to {MAX_JOBS}, got {jobs}")
    launcher: Any = None  # the local one, made by the Runner with `jobs`
    kind = args.launcher or suite.launcher.kind
    if kind == "slurm":
        from cebench.benchmarks.slurm import SlurmLauncher

        if args.jobs is not None:
            raise ConfigError("--jobs is for the local launcher; Slurm runs one job per cell")
        launcher, jobs = SlurmLauncher(suite.launcher, wait=not args.no_wait), 1
    elif args.no_wait:
        raise ConfigError("--no-wait needs --launcher slurm")
    runner = Runner(
        suite,
        out,
        CellExecutor(),
        jobs=jobs,
        only=args.only,
        rerun=args.rerun,
        command=command,
        overrides=args.overrides,
        log=lambda m: print(m, file=sys.stderr, flush=True),
        launcher=launcher,
        reuse=args.reuse,
    )
    local = getattr(runner.launcher, "kind", "") == "local"
    if args.status:
        from cebench.benchmarks.slurm import status_lines

        runner.resolve_all()
        print("\n".join(status_lines(runner)))
        return 0
    if not args.list and (local or runner.rerun):
        # never run a cell a Slurm job is running; nor --rerun one under Slurm (the queued job
        # would be taken for the rerun, with the old code)
        from cebench.benchmarks.slurm import refuse_if_jobs_active

        ids = [c.id for c in runner.selected] if local else sorted(runner.rerun)
        refuse_if_jobs_active(runner.out, ids)
    if args.list:
        runner.resolve_all()
        for cell in runner.selected:  # state, id, hash, then the settings that matter
            settings = cell_settings(cell, runner.resolved[cell.id], runner.out)
            state = "rerun" if cell.id in runner.rerun else runner.state(cell)
            print(f"{state:6s} {cell.id}  {runner.hashes[cell.id]}  {settings}")
        return 0
    outcome = runner.run()
    if args.readme and (runner.out / "table.md").is_file():
        from cebench.benchmarks.render import update_readme

        update_readme(args.readme, runner.out / "table.md")
    print(
        f"bench {suite.name}: {len(outcome.ran)} ran, {len(outcome.cached)} cached, "
        f"{len(outcome.failed)} failed in {_fmt(outcome.wall_s)} (cells' CPU time {_fmt(outcome.cpu_s)}); results in {runner.out}/results.csv, "
        f"{runner.out}/table.md",
        file=sys.stderr,
    )
    for cid, err in outcome.failed.items():
        print(f"  FAILED {cid}: {err}  (see {runner.out}/cells/{cid}.error.json)", file=sys.stderr)
    if outcome.stopped_by is not None:
        stopped = ", ".join(outcome.interrupted) or "none"
        print(
            f"bench {suite.name}: stopped by signal {outcome.stopped_by} (cells stopped half-way: "
            f"{stopped}); rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + outcome.stopped_by
    return 1 if outcome.failed else 0
