"""Provenance written with every run: the git commit of the code that produced it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """HEAD of the repository holding this package, '-dirty' appended when tracked files differ;
    None outside a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_version() -> str:
    """The installed distribution's version; '0.0.0+unknown' in a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cebench")
    except PackageNotFoundError:
        return "0.0.0+unknown"
