"""Typed configs: dataclasses with one set of defaults, YAML files, and `key=value` overrides.

    cfg = load_config(PretrainConfig, "pretrain/configs/paper-inpainting.yaml", ["optim.lr=1e-3"])

Nothing is changed silently: an unknown key is an error that lists the valid keys, a value that
does not parse as the field's type is an error naming the key, and `validate()` hooks on the
dataclasses reject out-of-range values. A YAML file may inherit from others with
`_base_: NAME_OR_PATH` (see `load_yaml`), so a variant holds only the keys that differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cebench.core.errors import ConfigError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from YAML or the command line) to the annotated type `tp`."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(
            f"config key '{key}' may not be empty (expected {getattr(tp, '__name__', tp)})"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = (
                parse_value(value, key)
                if value.strip().startswith("[")
                else [v for v in value.split(",") if v.strip()]
            )
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):  # YAML reads off / on / no / yes as booleans: `amp: off`
            words = ("on", "true", "yes") if value else ("off", "false", "no")
            value = next((w for w in words if w in choices), value)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp in (int, float, str):
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        if tp in (int, float) and isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        try:
            if tp is int and isinstance(value, str):
                as_float = float(value)  # accepts "1e3"
                if not as_float.is_integer():
                    raise ValueError
                return int(as_float)
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be {tp.__name__}, got {value!r}") from None
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    return value


MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy's generators take 0 .. 2**63 - 1 alike


def check_seed(value: int, key: str) -> None:
    """ConfigError unless `value` is a seed every generator takes as it is (a negative one is
    not silently wrapped round, a huge one does not overflow inside torch)."""
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"config key '{key}' must be from 0 to 2**63 - 1 (a seed), got {value}")


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line, column)."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{what} (line {mark.line + 1}, column {mark.column + 1})" if mark else what


MAX_DEPTH = 32  # nesting of mappings and lists in a config, and of its `_base_` chain


MAX_VALUES = 100_000  # values in one config, aliases counted each time they are used


def plain_data(value: Any, where: str) -> Any:
    """`value` (read from YAML) checked to be a config's plain data: mappings keyed by strings
    (`1: 2` is refused, not compared with str keys later), nested at most MAX_DEPTH deep, at
    most MAX_VALUES values (YAML aliases repeat a value without copying it: a few lines can
    stand for billions). The one check every YAML file and command-line value goes through;
    ConfigError naming it."""
    budget = [MAX_VALUES]

    def walk(v: Any, at: str, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{where}: more than {MAX_VALUES} values (YAML aliases count each time they "
                "are used)"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ConfigError(
                        f"{at}: key {k!r} is not text ({type(k).__name__}); keys must be names"
                    )
                walk(item, f"{at}.{k}" if depth else f"{at}: '{k}'", depth + 1)
        elif isinstance(v, list):
            for item in v:
                walk(item, at, depth + 1)

    walk(value, where, 0)
    return value


def _safe_load(text: str) -> Any:
    """yaml.safe_load; a document too deeply nested for the parser is a ConfigError."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep") from None


def parse_value(raw: str, key: str) -> Any:
    """A command-line value read as YAML (`[64, 64]`, `1e-3`, `true`); ConfigError if malformed."""
    try:
        value = _safe_load(raw)
    except yaml.YAMLError as e:
        why = str(getattr(e, "problem", "") or "not valid YAML")
        raise ConfigError(f"config key '{key}': value {raw!r} is malformed ({why})") from None
    except ConfigError as e:
        raise ConfigError(f"config key '{key}': value {e}") from None
    return plain_data(value, f"config key '{key}'")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) nested dict; unknown keys are errors."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: "
            + ", ".join(prefix + k for k in types_)
        )
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate(cfg: Any) -> None:
    """Run every nested dataclass's optional `validate()` method."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate(v)
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        hook()


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply `a.b=value` strings to a config; returns a new, validated config."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        cls: Any = type(cfg)
        for i, part in enumerate(parts):
            if i and (cls is dict or typing.get_origin(cls) is dict):
                where = ".".join(parts[:i])
                raise ConfigError(
                    f"unknown config key '{key}': set the mapping '{where}' whole, "
                    f"e.g. {where}={{{part}: ...}}"
                )
            if i and not dataclasses.is_dataclass(cls):  # `name.x=1`: a scalar holds no keys
                raise ConfigError(
                    f"unknown config key '{key}': '{'.'.join(parts[:i])}' is a single value "
                    f"({getattr(cls, '__name__', cls)}), not a section with keys"
                )
            valid = _field_types(cls)
            if part not in valid:
                where = ".".join(parts[:i])
                prefix = where + "." if where else ""
                raise ConfigError(
                    f"unknown config key '{key}'; valid keys"
                    + (f" under '{where}'" if where else "")
                    + ": "
                    + ", ".join(prefix + k for k in valid)
                )
            if i == len(parts) - 1:
                node[part] = parse_value(raw, key.strip()) if raw.strip() != "" else ""
                if isinstance(node[part], (dict, list)) or node[part] is None:
                    pass
                elif not isinstance(node[part], str) and _unwrap_optional(valid[part])[0] is str:
                    node[part] = raw
            else:
                node = node[part]
                cls = _unwrap_optional(valid[part])[0]
    return from_dict(type(cfg), data)


BASE_KEY = "_base_"
# {selector key: (section, the selector's value when no file sets it)}: a file that sets the
# selector to another value than its bases' starts that section afresh (see `load_yaml`)
Rebase = dict[str, tuple[str, Any]]


def load_yaml(
    path: str | Path, search_dirs: tuple[str | Path, ...] = (), rebase: Rebase | None = None
) -> dict[str, Any]:
    """The mapping in a YAML file, with its `_base_` files merged in under it.

    `_base_: NAME_OR_PATH` (or a list of them) names configs this file inherits from, as
    mmengine's `_base_`: the bases are loaded (recursively), deep-merged in order, and then this
    file's own keys are deep-merged over them (a mapping merges key by key; any other value,
    lists included, replaces). A key written `NAME+` (`arms+: [...]`) extends instead: the bases'
    list at NAME followed by these items (at any depth; NAME must be a list in the bases, and
    NAME and NAME+ may not both be in one mapping). A name ending in .yaml/.yml or holding a '/'
    is a path relative to this file; a bare name is `<name>.yaml` in this file's folder, then in
    `search_dirs`. A missing base or a cycle is a ConfigError naming the file.

    `rebase` ties a section to a selector key that names the section's starting values elsewhere
    (pretraining: `{"model_preset": ("model", "small-tiny")}`). A file that sets the selector to
    another value than its bases do drops the bases' keys of that section: its own keys (and those
    of the files that inherit from it) then apply to the newly selected values, never the old
    selection's leftovers."""
    return _load_with_bases(Path(path), tuple(Path(d) for d in search_dirs), (), rebase or {})


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(e)}") from None
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return plain_data(data, f"config file {path}")


def _load_with_bases(
    path: Path, search_dirs: tuple[Path, ...], chain: tuple[Path, ...], rebase: Rebase
) -> dict[str, Any]:
    key = path.resolve()
    if len(chain) >= MAX_DEPTH:
        raise ConfigError(
            f"config file {chain[0]}: its {BASE_KEY} chain is more than {MAX_DEPTH} files long "
            f"(at {path})"
        )
    if key in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(key) :], key))
        raise ConfigError(f"config file {chain[-1]}: _base_ cycle: {cycle}")
    return _merge_bases(_read_mapping(path), path, search_dirs, (*chain, key), rebase)


def merge_bases(
    data: dict[str, Any],
    where: str | Path,
    search_dirs: tuple[str | Path, ...] = (),
    rebase: Rebase | None = None,
) -> dict[str, Any]:
    """`data` (a mapping not read from a file, e.g. a suite's pretrain section) with its
    `_base_` configs merged in under it, as `load_yaml` does (`rebase` too); relative paths are
    relative to the current directory, and `where` names the mapping in errors."""
    if BASE_KEY not in data:
        return data
    here = Path(f"<{where}>")  # a pseudo file name in the current directory, for the errors
    return _merge_bases(dict(data), here, tuple(Path(d) for d in search_dirs), (), rebase or {})


def rebased(base: dict[str, Any], data: dict[str, Any], rebase: Rebase) -> dict[str, Any]:
    """`base` without the sections that `data` selects afresh (`load_yaml`'s `rebase`)."""
    out = base
    for key, (section, default) in rebase.items():
        if key in data and data[key] != base.get(key, default) and section in out:
            out = {k: v for k, v in out.items() if k != section}
    return out


def _merge_bases(
    data: dict[str, Any],
    path: Path,
    search_dirs: tuple[Path, ...],
    chain: tuple[Path, ...],
    rebase: Rebase,
) -> dict[str, Any]:
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return _extend_lists({}, data, path)  # a `NAME+` key with nothing to extend is refused
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(
            f"config file {path}: {BASE_KEY} must be a config name or path, or a list of them; "
            f"got {bases!r}"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = _base_path(base.strip(), path, search_dirs)
        loaded = _load_with_bases(base_path, search_dirs, chain, rebase)
        merged = _deep_merge(rebased(merged, loaded, rebase), loaded)
    merged = rebased(merged, data, rebase)
    return _deep_merge(merged, _extend_lists(merged, data, path))


EXTEND_SUFFIX = "+"


def _extend_lists(base: dict[str, Any], data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`data` with each `NAME+: [items]` key (at any depth of nested mappings) replaced by
    `NAME: base's list at NAME + items`, ready to deep-merge over `base`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not (isinstance(key, str) and key.endswith(EXTEND_SUFFIX)):
            under = base.get(key) if isinstance(base.get(key), dict) else {}
            out[key] = _extend_lists(under, value, path) if isinstance(value, dict) else value
            continue
        name = key[: -len(EXTEND_SUFFIX)]
        if name in data:
            raise ConfigError(f"config file {path}: both '{name}' and '{key}' are set; keep one")
        if not isinstance(base.get(name), list):
            raise ConfigError(
                f"config file {path}: '{key}' extends the bases' list '{name}', but the bases "
                f"hold no list there (got {type(base.get(name)).__name__})"
            )
        if not isinstance(value, list):
            raise ConfigError(f"config file {path}: '{key}' must be a list, got {value!r}")
        out[name] = [*base[name], *value]
    return out


def _base_path(name: str, path: Path, search_dirs: tuple[Path, ...]) -> Path:
    p = Path(name).expanduser()
    if looks_like_path(name):
        candidate = p if p.is_absolute() else path.parent / p
        if candidate.is_file():
            return candidate
        raise ConfigError(f"config file {path}: {BASE_KEY} file not found: {candidate}")
    folders = list(dict.fromkeys([path.parent, *search_dirs]))
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise ConfigError(
        f"config file {path}: {BASE_KEY} '{name}' not found (looked for {name}.yaml in: "
        + ", ".join(str(f) for f in folders)
        + ")"
    )


def looks_like_path(text: str | Path) -> bool:
    """Whether the user wrote a file path (it holds a separator or ends in .yaml / .yml) rather
    than a built-in name. What is in the working folder never matters: `--config small` is the
    named config even beside a folder called `small`; write `./small` for a file of that name."""
    text = str(text)
    return "/" in text or (os.sep in text) or Path(text).suffix.lower() in (".yaml", ".yml")


def named_yaml(name_or_file: str | Path, directory: Path, kind: str, listing: str) -> Path:
    """A YAML file path, or the name of a YAML file in `directory` (`small`, `default`), told
    apart by `looks_like_path` (the text, never the files present).

    Errors name the missing file, or the unknown name with the `listing` of the known ones."""
    if looks_like_path(name_or_file):
        p = Path(name_or_file).expanduser()
        if not p.is_file():
            what = "is not a file" if p.exists() else "not found"
            raise ConfigError(f"{kind} file {what}: {p}")
        return p
    named = directory / f"{name_or_file}.yaml"
    if not named.is_file():
        names = sorted(f.stem for f in directory.glob("*.yaml"))
        hint = (
            f" (a file of that name is here: write ./{name_or_file} to use it)"
            if Path(name_or_file).is_file()
            else ""
        )
        raise ConfigError(f"unknown {kind} '{name_or_file}'; {listing}: {', '.join(names)}{hint}")
    return named


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults of `cls`, then the YAML file at `path` (if any), then `overrides`."""
    cfg = cls()
    if path is not None:
        try:
            cfg = from_dict(cls, _deep_merge(to_dict(cfg), load_yaml(path)))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides or [])


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (dataclass or dict), for caching and provenance."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def save_resolved(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML (what dinov2 does with every run)."""
    from cebench.core.io import atomic_write_text

    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
