"""Code fingerprints: which modules a job can run, and what in their source counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cebench.core import fingerprint as fp


def test_closure_follows_lazy_imports_and_parent_packages():
    mods = fp.module_closure(["cebench.transfer.detect"])
    # the harness imports its shared parts; the encoders bring the registry's models and the core
    assert "cebench.transfer.detect" in mods
    assert "cebench.transfer" in mods  # the parent package's __init__ runs on import
    assert "cebench.core.errors" in mods
    assert any(m.startswith("cebench.pretrain.models") for m in mods)
    # ... but not the other harnesses, nor the benchmark runner above them
    assert "cebench.transfer.segment" not in mods
    assert "cebench.transfer.classify" not in mods
    assert not any(m.startswith("cebench.benchmarks") for m in mods)


def test_closure_of_a_file_hand_checked(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nfrom cebench.core import errors, io\n"
        "def f():\n    from .threads import set_threads\n    import cebench.core.lock\n"
    )
    known = set(fp.cebench_modules())
    got = fp.imported_modules(src, "cebench.core.m", known)
    assert got == {"cebench.core.errors", "cebench.core.io", "cebench.core.threads",
                   "cebench.core.lock"}


def test_normalised_source_ignores_comments_docstrings_and_layout(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""doc"""\ndef f(x):\n    """say what"""\n    return x + 1  # one\n')
    b.write_text("def f(x):\n\n    return (x +\n            1)\n")
    c.write_text("def f(x):\n    return x + 2\n")
    assert fp.normalised_source(a) == fp.normalised_source(b)
    assert fp.normalised_source(a) != fp.normalised_source(c)


def test_fingerprint_changes_with_the_code_of_a_reachable_module(monkeypatch, tmp_path):
    original = fp.cebench_modules()
    mods = dict(original)
    roots = ["cebench.transfer.detect"]
    before = fp.code_fingerprint(roots)
    assert before == fp.code_fingerprint(roots) and len(before) == 16
    # the same closure with one module's source changed (a copy, the package is untouched)
    target = "cebench.core.io"
    copy = tmp_path / "io.py"
    copy.write_text(Path(mods[target]).read_text() + "\nCHANGED = 1\n")
    mods[target] = copy
    monkeypatch.setattr(fp, "cebench_modules", lambda: mods)
    fp._fingerprint.cache_clear()
    try:
        assert fp.code_fingerprint(roots) != before
        # a change in a module outside the closure does not count
        mods[target] = original[target]
        fp._fingerprint.cache_clear()
        assert fp.code_fingerprint(roots) == before
        other = tmp_path / "classify.py"
        other.write_text(Path(mods["cebench.transfer.classify"]).read_text() + "\nX = 2\n")
        mods["cebench.transfer.classify"] = other
        fp._fingerprint.cache_clear()
        assert fp.code_fingerprint(roots) == before
    finally:
        fp._fingerprint.cache_clear()


def test_unknown_root_is_refused():
    with pytest.raises(ValueError, match="not cebench modules: cebench.nope"):
        fp.module_closure(["cebench.nope"])


def test_a_module_outside_cebench_is_fingerprinted_by_its_file(tmp_path, monkeypatch):
    """A transfer task registered by a user's own module: its file and the cebench modules it
    imports count (no error, and an edit of the file changes the fingerprint)."""
    mod = tmp_path / "my_task.py"
    mod.write_text("from cebench.transfer import harness\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fp._fingerprint.cache_clear()
    first = fp.code_fingerprint(["my_task"])
    assert first == fp.code_fingerprint(["my_task"])
    mod.write_text("from cebench.transfer import harness\nX = 2\n")
    fp._fingerprint.cache_clear()
    assert fp.code_fingerprint(["my_task"]) != first
    # existing roots keep their fingerprint: the inside part is unchanged
    fp._fingerprint.cache_clear()


def test_the_normalised_source_does_not_depend_on_the_python_version(tmp_path, monkeypatch):
    """What changes between Python versions does not reach the fingerprint: a node field that a
    later version adds (3.12's `type_params`, empty in this code), and how f-strings and nesting
    are written out (3.12's `ast.unparse` writes f-string quotes otherwise). Hand-checked text."""
    import ast

    src = tmp_path / "m.py"
    src.write_text('def f(x, *, y=1):\n    return f"{x!r:>4}" + "a"\n')
    want = (
        "Module(body=[FunctionDef(name='f', args=arguments(args=[arg(arg='x')], "
        "kwonlyargs=[arg(arg='y')], kw_defaults=[Constant(value=1)]), "
        "body=[Return(value=BinOp(left=JoinedStr(values=[FormattedValue(value=Name(id='x', "
        "ctx=Load()), conversion=114, format_spec=JoinedStr(values=[Constant(value='>4')]))]), "
        "op=Add(), right=Constant(value='a')))])])"
    )
    assert fp.normalised_source(src) == want
    # a field added by a later Python, empty here, changes nothing
    monkeypatch.setattr(ast.FunctionDef, "_fields", (*ast.FunctionDef._fields, "type_params"))
    monkeypatch.setattr(ast.FunctionDef, "type_params", [], raising=False)
    assert fp.normalised_source(src) == want
