"""The local launcher: a runner's cells on this machine, beside the Slurm launcher
(cebench.benchmarks.slurm.SlurmLauncher); the runner hands either one its missing cells.

    runner = Runner(suite, out, CellExecutor(), launcher=LocalLauncher(jobs=2))
    LocalLauncher(1).run(runner, todo, outcome)   # what Runner._dispatch does

jobs=1 runs the cells one after another in this process; jobs > 1 in that many worker processes
(spawned; CPUs // jobs torch threads each), a cell starting once its dependencies finished. Like
the Slurm launcher it takes what it needs from the runner it is handed (`execute_cell`,
`init_worker`, `stop_cell`, `_record`, ...) and does not import cebench.benchmarks.runner.

SIGINT/SIGTERM while it runs (`signal_handler`, which the runner installs): jobs=1, the runner's
`stop_cell` stops the cell in this process; jobs > 1, the first signal is forwarded once to the
worker processes (their own process group) and no new cell starts; a second one aborts at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any


class LocalLauncher:
    """Runs cells on this machine: serially in this process (jobs=1) or in a process pool."""

    kind = "local"
    wait = True  # the runner waits for its cells (more_seeds rounds follow)

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs
        self.workers: cf.ProcessPoolExecutor | None = None  # jobs > 1: the pool running now

    def signal_handler(self, runner: Any, outcome: Any) -> Callable[[int, Any], None]:
        """The SIGINT/SIGTERM handler the runner installs while this launcher runs its cells."""
        if self.jobs == 1:
            return runner.stop_cell
        return partial(self._forward_signal, outcome)

    def _forward_signal(self, outcome: Any, signum: int, frame: Any) -> None:
        """jobs > 1: pass the first SIGINT/SIGTERM on to the worker processes once (they are in
        their own process group) and start no new cell; a second one aborts at once."""
        if outcome.stopped_by is not None:
            raise KeyboardInterrupt
        outcome.stopped_by = signum
        procs = getattr(self.workers, "_processes", None) or {}
        for proc in list(procs.values()):
            try:
                os.kill(proc.pid, signum)
            except (ProcessLookupError, TypeError):
                pass

    def run(self, runner: Any, todo: list[Any], outcome: Any) -> None:
        if self.jobs == 1:
            self._serial(runner, todo, outcome)
        else:
            self._pool(runner, todo, outcome)

    def _serial(self, runner: Any, todo: list[Any], outcome: Any) -> None:
        for cell in todo:
            if outcome.stopped_by is not None:
                break
            reason = runner._blocked(cell, outcome)
            res = (
                {"ok": False, "error": reason, "wall_time_s": 0.0}
                if reason
                else runner.execute_cell(
                    runner.executor,
                    cell,
                    runner.resolved[cell.id],
                    runner._work(cell),
                    runner.hashes[cell.id],
                )
            )
            runner._record(cell, res, outcome)

    def _pool(self, runner: Any, todo: list[Any], outcome: Any) -> None:
        """Worker processes (CPUs // jobs torch threads each, `cebench.core.threads`); a cell starts
        once its dependencies finished.
        A worker that dies (segfault, out of memory) fails the cells it took down with it, and the
        pool is rebuilt for the rest."""
        waiting = list(todo)
        ctx = multiprocessing.get_context("spawn")
        from cebench.core.threads import set_threads, threads_note

        set_threads(jobs=self.jobs)  # said once here; the workers (same choice) stay quiet
        if note := threads_note():
            print(note, file=sys.stderr, flush=True)

        def new_pool() -> cf.ProcessPoolExecutor:
            return cf.ProcessPoolExecutor(
                self.jobs, mp_context=ctx, initializer=runner.init_worker, initargs=(self.jobs,)
            )

        pool = self.workers = new_pool()
        running: dict[cf.Future, tuple[Any, cf.ProcessPoolExecutor]] = {}
        try:
            while (waiting and outcome.stopped_by is None) or running:
                finished = set(outcome.ran) | set(outcome.cached)
                for cell in list(waiting):
                    if len(running) >= self.jobs or outcome.stopped_by is not None:
                        break
                    reason = runner._blocked(cell, outcome)
                    if reason:
                        waiting.remove(cell)
                        runner._record(
                            cell, {"ok": False, "error": reason, "wall_time_s": 0.0}, outcome
                        )
                    elif all(d in finished for d in cell.depends):
                        waiting.remove(cell)
                        args = (
                            runner.execute_cell,
                            runner.executor,
                            cell,
                            runner.resolved[cell.id],
                            runner._work(cell),
                            runner.hashes[cell.id],
                        )
                        try:
                            fut = pool.submit(*args)
                        except cf.process.BrokenProcessPool:
                            pool.shutdown(wait=False, cancel_futures=True)
                            pool = self.workers = new_pool()
                            fut = pool.submit(*args)
                        running[fut] = (cell, pool)
                if not running:
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    cell, its_pool = running.pop(fut)
                    try:
                        res = fut.result()
                    except cf.process.BrokenProcessPool as e:
                        res = {
                            "ok": False,
                            "error": f"worker process died: {e}",
                            "wall_time_s": 0.0,
                        }
                        if its_pool is pool:
                            pool.shutdown(wait=False, cancel_futures=True)
                            pool = self.workers = new_pool()
                    runner._record(cell, res, outcome)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.workers = None
