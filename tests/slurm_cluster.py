"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd under a temporary folder.

    python tests/slurm_cluster.py /tmp/slurm     # start it, print `export SLURM_CONF=...`; Ctrl-C stops it

    with SlurmCluster(tmp_path) as cluster:      # in a test: cluster.env has SLURM_CONF
        subprocess.run(["sinfo"], env=cluster.env)

Everything lives under the folder: the munge key and socket, slurm.conf (localhost with the
machine's CPUs, no cgroups, no systemd, no accounting daemon), state, spool, logs and pid files.
Nothing in /etc is touched. Needs root and the Debian packages `slurm-wlm` and `munge`
(`missing()` says what is absent, for a skip reason). `stop()` ends the daemons by their pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str:
    """Why this machine cannot run the cluster ('' when it can)."""
    absent = [
        p
        for p in (*DAEMONS, "munge", "sbatch", "squeue", "scancel", "sinfo")
        if shutil.which(p) is None and not Path("/usr/sbin", p).exists()
    ]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd/slurmctld/munged needs root"
    try:
        import submitit  # noqa: F401
    except ModuleNotFoundError:
        return "submitit is not installed"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """One node (this machine), one partition `debug` (default), every CPU schedulable."""

    def __init__(self, root: str | Path, cpus: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.cpus = cpus or os.cpu_count() or 1
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.pids: dict[str, Path] = {d: self.root / f"{d}.pid" for d in DAEMONS}
        self.socket = self.root / "munge" / "munge.socket"
        if len(str(self.socket)) > 100:  # a Unix socket path has at most 107 bytes
            self.socket = Path(tempfile.mkdtemp(prefix="cebench-munge-")) / "munge.socket"

    def _write_files(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(r / "munge", 0o700)
        os.chmod(key, 0o400)
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        lines = {
            "ClusterName": "cebench-test",
            "SlurmctldHost": self.node,
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self.socket}",
            "CredType": "cred/munge",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "StateSaveLocation": r / "state",
            "SlurmdSpoolDir": r / "spool",
            "SlurmctldPidFile": self.pids["slurmctld"],
            "SlurmdPidFile": self.pids["slurmd"],
            "SlurmctldLogFile": r / "log" / "slurmctld.log",
            "SlurmdLogFile": r / "log" / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "MpiDefault": "none",
            "ReturnToService": 2,
            # fast turnaround for tests: schedule at once, short kill wait, forget old jobs late
            "SchedulerType": "sched/builtin",
            "SchedulerParameters": "sched_interval=1",
            "KillWait": 3,
            "MinJobAge": 600,
            "InactiveLimit": 0,
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 30,
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += (
            f"NodeName={self.node} CPUs={self.cpus} RealMemory={max(256, mem_mb // 2)} State=UNKNOWN\n"
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.conf.write_text(text)

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self._write_files()
        r = self.root
        self._run(
            _exe("munged"),
            "--force",
            f"--key-file={r / 'munge' / 'munge.key'}",
            f"--socket={self.socket}",
            f"--pid-file={self.pids['munged']}",
            f"--log-file={r / 'log' / 'munged.log'}",
            f"--seed-file={r / 'munge' / 'munged.seed'}",
        )
        self._run(_exe("slurmctld"), "-i")  # -i: ignore state left by an earlier cluster
        self._run(_exe("slurmd"))
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True
            )
            state = out.stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        logs = self.log_tail()
        self.stop()
        raise RuntimeError(f"Slurm node not idle after {timeout:.0f}s (sinfo: {state!r})\n{logs}")

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged by their pid files."""
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.pids[name]
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    why = missing()
    if why:
        sys.exit(f"cannot start: {why}")
    cluster = SlurmCluster(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cebench-slurm").start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
