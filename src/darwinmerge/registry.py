"""A small named registry, one per extension point (merge methods, scorers, backends,
task sources, probe sets, genome spaces, optimizers, report sections, scan readers).

One way to register: the ``@REGISTRY.register(name)`` decorator, in the module that
defines the thing. Duplicates are refused; an unknown name is answered with the known
ones and a "did you mean" suggestion.

A name that a plug-in provides (a module the library itself never imports: the demo zoo,
the MRI's scan reader for the merge's ``revive:``) is listed in the registry's static
``plugins`` table, name -> module. The module is imported the first time the name is
asked for; until then the name counts as known (``in``, :meth:`Registry.names`). A test
imports every module of every table and checks that it registers its names.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from darwinmerge.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; ``kind`` is used in error messages;
    ``plugins`` maps names to the modules that register them when imported."""

    def __init__(self, kind: str, *, plugins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.plugins: dict[str, str] = dict(plugins or {})
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` (what :meth:`register` does; for objects built in a loop)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def _load(self, name: str) -> None:
        """Import the plug-in module that provides ``name`` (a module that is not
        installed leaves the name unregistered; any other import error is raised)."""
        module = self.plugins.get(name)
        if module is None or name in self._items:
            return
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            del self.plugins[name]

    def get(self, name: str) -> T:
        self._load(name)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}"

    def names(self) -> list[str]:
        """Every known name: registered ones and the plug-ins' (not imported here)."""
        return sorted(set(self._items) | set(self.plugins))

    def registered(self) -> list[str]:
        """The names registered so far, in registration order (no plug-in imported)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.plugins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
