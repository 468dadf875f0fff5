"""Fingerprints of the code that computes a result: the source of the modules a job can run.

    from cebench.core.fingerprint import code_fingerprint, module_closure
    code_fingerprint(["cebench.pretrain.train"])   # 'c0ffee...' (16 hex digits)

A benchmark cell records the fingerprint of the code it ran (`cebench bench` reruns a cell whose
fingerprint changed, as it does for a changed config), so committed tables are what the current
code produces. The fingerprint is taken over the *source* of the cebench modules reachable from the
job's entry modules through their imports (at the top of a file or inside functions: the lazy
imports count too), not over the commit id, so that an edit of the README, of a test or of a module
the job cannot reach invalidates nothing. Each module's source is normalised first: parsed,
docstrings removed, and the syntax tree written out node by node (`dump_tree`), so comments,
docstrings and formatting do not count either; everything else does (an error message's wording
too: that errs on the safe side). Not `ast.unparse` nor `ast.dump`: their output changes between
Python versions (3.12 writes some f-strings otherwise; 3.13 leaves out empty fields), and a
fingerprint must not.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

# the installed packages whose folders hold cebench's modules (pyproject's package-dir mapping:
# cebench.pretrain is the repository's pretrain/ folder, and so on)
PACKAGES = ("cebench", "cebench.pretrain", "cebench.transfer", "cebench.benchmarks")


@lru_cache(maxsize=1)
def cebench_modules() -> dict[str, Path]:
    """{module name: source file} of every cebench module, wherever the packages are installed."""
    mods: dict[str, Path] = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in map(Path, spec.submodule_search_locations):
            for path in sorted(root.rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if package == "cebench" and parts and f"cebench.{parts[0]}" in PACKAGES:
                    continue  # a wheel keeps cebench/pretrain/ inside cebench/: listed by its own
                if "__pycache__" in parts:
                    continue
                name = ".".join([package, *(p for p in parts if p != "__init__")])
                mods[name] = path
    return mods


def imported_modules(path: Path, module: str, known: set[str] | frozenset[str]) -> set[str]:
    """The cebench modules `path` (the source of `module`) imports, at the top or inside functions;
    `from package import name` counts `package.name` when that is a module."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}".rstrip(".")
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        found |= {n for n in names if n == "cebench" or n.startswith("cebench.")}
    return {n for n in found if n in known}


def module_closure(roots: list[str] | tuple[str, ...]) -> list[str]:
    """`roots` and every cebench module they import, transitively (sorted); the parent packages
    of each module count too (importing `a.b.c` runs `a/__init__` and `a/b/__init__`)."""
    mods = cebench_modules()
    known = frozenset(mods)
    unknown = [r for r in roots if r not in known]
    if unknown:
        raise ValueError(f"not cebench modules: {', '.join(unknown)}")
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        parents = [m.rsplit(".", k)[0] for k in range(1, m.count(".") + 1)]
        stack += [p for p in parents if p in known and p not in seen]
        stack += sorted(imported_modules(mods[m], m, known) - seen)
    return sorted(seen)


def dump_tree(node: Any) -> str:
    """The syntax tree as text, the same on every Python version that parses it the same: node
    type names and their fields, positions left out, and fields that are None or empty left out
    too (a field a later Python adds, as 3.12's `type_params`, is empty in code without it)."""
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or (isinstance(value, list) and not value):
                continue
            fields.append(f"{name}={dump_tree(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(dump_tree(v) for v in node) + "]"
    return repr(node)


def normalised_source(path: Path) -> str:
    """The module's code without comments, docstrings or formatting (`dump_tree`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return dump_tree(tree)


def _outside_file(name: str) -> Path | None:
    """The source file of a module outside cebench (a task registered by a user's script)."""
    import sys

    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        path = spec.origin if spec is not None else None
    return Path(path) if path and Path(path).is_file() else None


@lru_cache(maxsize=64)
def _fingerprint(roots: tuple[str, ...], also: tuple[str, ...]) -> str:
    mods = cebench_modules()
    known = frozenset(mods)
    h = hashlib.sha256()
    inside = [r for r in roots if r in known]
    for name in sorted(r for r in roots if r not in known):  # e.g. a user's own task module
        path = _outside_file(name)
        source = normalised_source(path) if path is not None else ""
        h.update(name.encode() + b"\0" + source.encode() + b"\0")
        if path is not None:
            inside += sorted(imported_modules(path, name, known))
    for name in sorted(set(module_closure(inside)) | set(also)):
        h.update(name.encode() + b"\0" + normalised_source(mods[name]).encode() + b"\0")
    return h.hexdigest()[:16]


def code_fingerprint(
    roots: list[str] | tuple[str, ...], also: list[str] | tuple[str, ...] = ()
) -> str:
    """16 hex digits over the normalised source of `module_closure(roots)` and of the modules
    `also` (their source alone, not what they import: e.g. the executor that calls the roots)."""
    return _fingerprint(tuple(sorted(roots)), tuple(sorted(also)))
