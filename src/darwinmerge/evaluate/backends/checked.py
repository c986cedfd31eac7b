"""Checked weight swaps for serving engines (vLLM, SGLang): a candidate is scored by the
engine only after the engine's log-probabilities on reference token sequences agree with
the ones darwin computed itself from the candidate's weights.

:class:`CheckedEngine` holds the protocol: :meth:`~CheckedEngine.swap` pushes the
candidate in place (the engine's own weight-update API), checks, restarts the engine on
the candidate's folder when the check fails, checks again, and raises
:class:`EvaluationError` in one line when that fails too. ``usable`` is False from the
start of a swap until a check passes, and scoring refuses meanwhile.
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from darwinmerge.errors import EvaluationError

__all__ = ["CheckedEngine", "SwapCheck", "default_tolerance"]


@dataclass(frozen=True)
class SwapCheck:
    """Reference token sequences and their per-token log-probabilities (token ``i`` given
    tokens ``< i``, from position 1), computed by darwin from the candidate's weights.
    An engine passes when a ``quantile`` of the tokens (all of them by default) have a
    log-probability within ``atol + rtol * |expected|`` of darwin's, and no token is NaN.
    In half precision a few tokens may route to another expert (a near tie of the router
    rounded otherwise) and move by a few tenths; a wrong or half-swapped model moves
    nearly every token."""

    token_ids: tuple[tuple[int, ...], ...]
    expected: tuple[tuple[float, ...], ...]
    atol: float = 2e-3
    rtol: float = 1e-3
    quantile: float = 1.0

    def excess(self, got: Sequence[Sequence[float]]) -> float:
        """``|got - expected| - tolerance`` at the ``quantile`` of the tokens (the largest
        by default; > 0 fails; NaN, or a row of another length, is inf)."""
        over: list[float] = []
        for row, want in zip(got, self.expected, strict=True):
            if len(row) != len(want):
                return math.inf
            for g, w in zip(row, want, strict=True):
                d = abs(g - w)
                if not math.isfinite(d):
                    return math.inf
                over.append(d - (self.atol + self.rtol * abs(w)))
        if not over:
            return math.inf
        over.sort()
        return over[max(0, math.ceil(self.quantile * len(over)) - 1)]


def default_tolerance(dtype: str) -> tuple[float, float, float]:
    """(atol, rtol, quantile) of :class:`SwapCheck` for an engine dtype: float32 kernels
    agree with transformers to about 1e-5 per token (every token checked); in half
    precision most tokens agree to a few hundredths (90% of tokens checked)."""
    return (2e-3, 1e-3, 1.0) if dtype in ("float32", "auto") else (0.1, 0.02, 0.9)


class CheckedEngine(ABC):
    """Checked swaps over an engine's ``push`` (in place), ``restart`` (a fresh engine on
    a model folder) and ``prompt_logprobs`` (per-token log-probabilities)."""

    engine_name = "engine"

    def __init__(self) -> None:
        #: False while a swap is under way or after one failed: scoring refuses
        self.usable = False
        #: False once an in-place push failed its check: later swaps restart the engine
        self.push_trusted = True
        #: per swap: (path taken, seconds)
        self.history: list[tuple[str, float]] = []

    @abstractmethod
    def push(
        self, tensors: Mapping[str, torch.Tensor], folder: Callable[[], str | Path] | None = None
    ) -> float:
        """Implemented by each engine."""

    @abstractmethod
    def restart(self, folder: str | Path) -> float:
        """Implemented by each engine."""

    @abstractmethod
    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Implemented by each engine."""

    def verify(self, check: SwapCheck) -> float:
        """:meth:`SwapCheck.excess` of the engine's log-probabilities (> 0: wrong)."""
        return check.excess(self.prompt_logprobs(check.token_ids))

    def swap(
        self,
        tensors: Mapping[str, torch.Tensor],
        check: SwapCheck,
        folder: Callable[[], str | Path],
    ) -> str:
        """One candidate into the engine, proven by ``check``: an in-place push of
        ``tensors`` (while pushes have passed), else or on a mismatch a fresh engine on
        ``folder()`` (the candidate written whole). Returns the path taken (``"push"`` or
        ``"restart"``); raises :class:`EvaluationError` (the engine left unusable) when
        the restarted engine still disagrees."""
        start = time.perf_counter()
        self.usable = False
        reason = ""
        if self.push_trusted:
            try:
                self.push(tensors, folder)
                excess = self.verify(check)
            except EvaluationError:
                raise
            except Exception as exc:  # an engine error: the restart decides
                excess, reason = math.inf, f"{type(exc).__name__}: {exc}".splitlines()[0]
            if excess <= 0:
                self.usable = True
                self.history.append(("push", time.perf_counter() - start))
                return "push"
            self.push_trusted = False
            reason = reason or f"log-probabilities off by {excess:.3g} beyond the tolerance"
            warnings.warn(
                f"{self.engine_name} in-place weight update failed its check ({reason}); "
                "every later candidate restarts the engine on its folder",
                RuntimeWarning,
                stacklevel=2,
            )
        self.restart(folder())
        self.usable = False
        excess = self.verify(check)
        if excess > 0:
            raise EvaluationError(
                f"{self.engine_name} scores this candidate {excess:.3g} beyond the tolerance "
                "off darwin's own log-probabilities even after a full reload; refusing to score it "
                "(use backend transformers for this family)"
            )
        self.usable = True
        self.history.append(("restart", time.perf_counter() - start))
        return "restart"

    def _usable(self, what: str) -> None:
        if not self.usable:
            raise EvaluationError(
                f"{what}: the {self.engine_name} engine holds no checked model (a swap failed "
                "or is under way); swap a candidate in first"
            )
