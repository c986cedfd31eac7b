"""Every rename of a file or folder over another lives in ``darwinmerge/atomic.py``: the
rest of ``src`` writes folders with ``atomic_folder`` (or finishes its own temporary
folder with ``move_into_place``) and files with ``write_text_atomic`` / ``replace_file``.

The scan reads the syntax tree of every module: ``os.replace``, ``os.rename``,
``os.renames``, ``shutil.move``, any ``.rename(...)`` call, and ``.replace(x)`` with one
argument and no keywords (``Path.replace``; ``str.replace`` takes two)."""

from __future__ import annotations

import ast
from pathlib import Path

import darwinmerge

SRC = Path(darwinmerge.__file__).parent
ALLOWED = {"atomic.py"}
MODULE_CALLS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}


def renames(tree: ast.AST) -> list[int]:
    """Line numbers of the rename calls in ``tree``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        if isinstance(owner, ast.Name) and (owner.id, attr) in MODULE_CALLS:
            lines.append(node.lineno)
        elif attr == "rename":
            lines.append(node.lineno)
        elif attr == "replace" and len(node.args) == 1 and not node.keywords:
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_each_kind_of_rename():
    code = """
import os, shutil
os.replace(a, b); os.rename(a, b); shutil.move(a, b); p.rename(q); p.replace(q)
s.replace("a", "b"); dataclasses.replace(x, y=1); t.replace(year=1)
"""
    assert len(renames(ast.parse(code))) == 5


def test_only_atomic_py_renames_files_or_folders():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        found += [f"{rel}:{n}" for n in renames(ast.parse(path.read_text(), str(path)))]
    assert found == [], f"use darwinmerge.atomic (atomic_folder, replace_file): {found}"
    assert renames(ast.parse((SRC / "atomic.py").read_text()))  # the scan sees atomic.py's


def test_move_into_place_replaces_a_folder_and_leaves_nothing_aside(tmp_path):
    from darwinmerge.atomic import move_into_place

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("new")
    move_into_place(tmp_path / "new", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.txt"]
