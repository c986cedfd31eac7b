"""A stand-in for torchvision, for text-only scoring on vLLM's CPU build.

vLLM's ``qwen3_5`` model file imports transformers' Qwen2-VL image processor, which
imports ``torchvision.transforms.v2.functional`` at module level; the torchvision wheel
pip brings is a CUDA build that cannot load next to torch's CPU build. Put this folder's
parent on ``PYTHONPATH`` (``tests/evaluate/vllm_stub``): every ``torchvision`` module
then imports, and any use of one raises (a text model never uses them).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

__version__ = "0.0.0+darwin.stub"


class _Missing:
    """Any attribute of a stub module: usable as a default value, fails when called."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Missing:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name}: torchvision is a stub here (text-only scoring)")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> _Missing:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes every ``torchvision.*`` submodule a stub module on import."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


sys.meta_path.insert(0, _Finder())


def __getattr__(attr: str) -> _Missing:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Missing(f"torchvision.{attr}")
