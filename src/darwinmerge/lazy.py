"""Lazy re-exports for package ``__init__`` modules whose submodules import torch.

A package lists its public names as ordinary ``from darwinmerge.<pkg>.<mod> import ...``
statements under ``if TYPE_CHECKING:`` (what type checkers and readers see) and ends with
``__getattr__, __dir__ = lazy_exports(__name__, __file__)``. Importing the package, or a
light submodule of it (``darwinmerge.merge.recipe``), then loads nothing else; a public
name is imported from its module the first time it is asked for. The ``TYPE_CHECKING``
imports are the one list of exports: they are read from the package's source here.

A public name spelled like a submodule (``darwinmerge.health.repair``, the function, and
``darwinmerge/health/repair.py``) keeps meaning the export once the submodule is loaded,
as it did with eager imports: the package ignores the import system binding the module.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports", "type_checking_imports"]


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


class _LazyPackage(ModuleType):
    """A package whose exports load on first use (the class of a lazy package)."""

    __lazy_exports__: dict[str, str]

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
            and name in self.__dict__.get("__lazy_exports__", {})
        ):
            return  # a submodule named like an export: the name stays the export
        super().__setattr__(name, value)


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: its ``TYPE_CHECKING`` imports,
    loaded on first access (and then cached as ordinary module attributes)."""
    where = type_checking_imports(Path(init_file).read_text(encoding="utf-8"))
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module.__dict__["__lazy_exports__"] = where

    def __getattr__(name: str) -> Any:
        source = where.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(where))

    return __getattr__, __dir__
