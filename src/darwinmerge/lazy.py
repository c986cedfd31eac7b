"""Lazy re-exports for package ``__init__`` modules whose submodules import torch.

A package lists its public names twice, both static: as ordinary
``from darwinmerge.<pkg>.<mod> import ...`` statements under ``if TYPE_CHECKING:`` (what
type checkers and readers see) and in a table ``_EXPORTS = {name: module}``; it ends with
``__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)``. Importing the package, or a
light submodule of it (``darwinmerge.merge.recipe``), then loads nothing else; a public
name is imported from its module the first time it is asked for. ``tests/test_lazy.py``
checks every table against the package's imports, its ``__all__`` and the modules.

A public name spelled like a submodule (``darwinmerge.health.repair``, the function, and
``darwinmerge/health/repair.py``) keeps meaning the export once the submodule is loaded,
as it did with eager imports: the package ignores the import system binding the module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports"]


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
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``exports`` (name ->
    absolute module) loaded on first access, then cached as an ordinary attribute."""
    where = dict(exports)
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
