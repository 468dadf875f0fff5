"""Numbers from environment variables, parsed strictly and bounded, in one place.

    from cebench.core.env import check_environment, env_number
    check_environment()                        # all of them at once (the `cebench` command)
    jobs = env_number("CEBENCH_JOBS", 1)       # bounds from VARIABLES

Every CEBENCH_* variable that holds a number is read here: ASCII digits only (`²` or `٣` are not
numbers here, though Python's `int` and `str.isdigit` accept some), within [lo, hi]; anything
else is a ConfigError naming the variable, its value and the range, never a silent default
(a negative cache size does not turn the cache off) and never a value torch cannot take
(`CEBENCH_THREADS=99999` crashed torch).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from cebench.core.errors import ConfigError

# every CEBENCH_* variable that holds a number: (type, lowest, highest, unit)
VARIABLES: dict[str, tuple[type, float, float, str]] = {
    "CEBENCH_THREADS": (int, 1, 256, ""),  # torch.set_num_threads(99999) crashed the process
    "CEBENCH_JOBS": (int, 1, 1024, ""),
    "CEBENCH_OMP_PASSIVE": (int, 0, 1, ""),
    "CEBENCH_IMAGE_CACHE_MB": (float, 0, 2**20, "of MiB"),
    "CEBENCH_PROGRESS_EVERY": (float, 0, 1e7, "of seconds"),
}

# the CEBENCH_* variables that hold no number (read where they are used), so that this file lists
# every CEBENCH_* variable: name -> what it holds
OTHER_VARIABLES: dict[str, str] = {
    "CEBENCH_LISTING_CACHE": "a folder for cached tree listings, or off / 0 (cebench.data.listing)",
    "CEBENCH_DATA_MIRROR": "the base URL `cebench data get` downloads from (cebench.data.get)",
}

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_int(name: str, raw: str, lo: int, hi: int) -> int:
    """`raw` as a whole number in [lo, hi], or ConfigError naming `name`."""
    text = raw.strip()
    if not _INT.fullmatch(text) or not lo <= int(text) <= hi:
        raise ConfigError(f"{name}={raw!r}: must be a whole number from {lo} to {hi}")
    return int(text)


def parse_float(name: str, raw: str, lo: float, hi: float, unit: str = "") -> float:
    """`raw` as a finite number in [lo, hi], or ConfigError naming `name`."""
    text = raw.strip()
    value = float(text) if _FLOAT.fullmatch(text) else math.nan
    if not lo <= value <= hi:  # NaN fails too
        unit = f" {unit}" if unit else ""
        raise ConfigError(f"{name}={raw!r}: must be a number{unit} from {_num(lo)} to {_num(hi)}")
    return value


def env_number(
    name: str, default: float | None = None, env: Mapping[str, str] | None = None
) -> float | None:
    """The CEBENCH_* variable `name` (bounds from VARIABLES); `default` when unset or empty."""
    kind, lo, hi, unit = VARIABLES[name]
    raw = (os.environ if env is None else env).get(name, "")
    if not raw.strip():
        return default
    if kind is int:
        return parse_int(name, raw, int(lo), int(hi))
    return parse_float(name, raw, lo, hi, unit)


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """Every CEBENCH_* number in VARIABLES, checked at once (the `cebench` command does this
    first, so a bad value is refused before any work, not half-way through it)."""
    for name in VARIABLES:
        env_number(name, env=env)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
