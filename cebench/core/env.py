"""Numbers from environment variables, parsed strictly and bounded, in one place.

    from cebench.core.env import env_int, env_float
    jobs = env_int("CEBENCH_JOBS", default=1, lo=1, hi=1024)

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


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def env_int(
    name: str, *, default: int | None, lo: int, hi: int, env: Mapping[str, str] | None = None
) -> int | None:
    """The environment variable `name` as an int in [lo, hi]; `default` when unset or empty."""
    raw = (os.environ if env is None else env).get(name, "")
    return default if not raw.strip() else parse_int(name, raw, lo, hi)


def env_float(
    name: str,
    *,
    default: float,
    lo: float,
    hi: float,
    unit: str = "",
    env: Mapping[str, str] | None = None,
) -> float:
    """The environment variable `name` as a float in [lo, hi]; `default` when unset or empty."""
    raw = (os.environ if env is None else env).get(name, "")
    return default if not raw.strip() else parse_float(name, raw, lo, hi, unit)
