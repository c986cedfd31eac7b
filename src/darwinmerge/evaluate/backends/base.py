"""The backend protocol and its registry.

A backend turns prompts into greedy generations and (context, continuation) pairs into
summed log-likelihoods, and can take new weights in memory (``load_state``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from darwinmerge.registry import Registry

__all__ = ["Backend", "BackendFactory", "BACKENDS", "make_backend"]


@runtime_checkable
class Backend(Protocol):
    """What :func:`darwinmerge.evaluate.evaluate` needs from a model runner."""

    def generate(self, prompts: Sequence[str]) -> list[str]: ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]: ...

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None: ...


BackendFactory = Callable[..., Backend]
"""Called as ``factory(model, tokenizer=None, **options)``."""

BACKENDS: Registry[BackendFactory] = Registry("backend")


def make_backend(name: str, model: Any, tokenizer: Any = None, **options: Any) -> Backend:
    """Build the backend registered as ``name``."""
    return BACKENDS.get(name)(model, tokenizer, **options)
