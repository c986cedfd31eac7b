"""Lazy package exports (darwinmerge.lazy): each package's static ``_EXPORTS`` table
matches its TYPE_CHECKING imports and ``__all__``, each export resolves to its module's
object, and importing a light submodule loads nothing else."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

LAZY = [
    "darwinmerge.merge",
    "darwinmerge.evolve",
    "darwinmerge.run",
    "darwinmerge.mri",
    "darwinmerge.health",
]


def type_checking_imports(source: str) -> dict[str, str]:
    """Public name -> absolute module, from the ``if TYPE_CHECKING:`` blocks of ``source``."""
    where: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                for alias in stmt.names:
                    where[alias.asname or alias.name] = stmt.module
    return where


@pytest.mark.parametrize("name", LAZY)
def test_the_static_table_matches_the_imports_all_and_the_modules(name: str):
    package = importlib.import_module(name)
    table = package._EXPORTS
    # the table names what the TYPE_CHECKING imports (what type checkers see) import
    assert table == type_checking_imports(Path(package.__file__).read_text())
    assert sorted(package.__all__) == sorted(table)
    for export, module in table.items():
        assert getattr(package, export) is getattr(importlib.import_module(module), export)
    assert set(table) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_export_named_like_a_submodule_stays_the_export():
    """health.repair is a function and a module; loading the module keeps the function."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import darwinmerge.health.pipeline, darwinmerge.health.repair\n"
            "from darwinmerge.health import repair\n"
            "import darwinmerge.health as h\n"
            "print(callable(repair), type(h.repair).__name__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "function"]


def test_light_submodules_load_no_torch():
    """The declarations and config models import without torch, transformers or numpy."""
    code = (
        "import sys\n"
        "import darwinmerge.merge.methods, darwinmerge.merge.recipe, darwinmerge.merge\n"
        "import darwinmerge.evolve.config, darwinmerge.evolve.samplers, darwinmerge.evolve.space\n"
        "import darwinmerge.run.config, darwinmerge.mri.config, darwinmerge.health.options\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_lazy_package_is_checked():
    src = Path(importlib.import_module("darwinmerge").__file__).parent
    lazy = sorted(
        "darwinmerge." + p.parent.name
        for p in src.glob("*/__init__.py")
        if "lazy_exports(" in p.read_text()
    )
    assert lazy == sorted(LAZY)
