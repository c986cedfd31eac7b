"""Scorers turn a backend and items into per-item results.

* ``exact_match`` (generative): greedy generation, answer extraction
  (:class:`AnswerExtractor`), then ``normalise_answer(extracted) == normalise_answer(answer)``.
* ``mc_loglik`` (multiple choice): summed log-likelihood of each choice as a
  continuation of the prompt; the argmax is the prediction (ties go to the first
  choice). The length-normalised variant divides each sum by the choice's UTF-8 byte
  length and is kept as ``correct_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from darwinmerge.errors import EvaluationError
from darwinmerge.evaluate.backends.base import Backend
from darwinmerge.evaluate.extraction import (
    DEFAULT_ANSWER_PATTERN,
    AnswerExtractor,
    normalise_answer,
)
from darwinmerge.evaluate.tasks import TaskItem
from darwinmerge.registry import Registry

__all__ = [
    "ItemResult",
    "Scorer",
    "SCORERS",
    "ExactMatch",
    "MCLoglik",
    "make_scorer",
]


@dataclass(frozen=True)
class ItemResult:
    """The outcome on one item. ``prediction`` is the raw generation (exact match) or
    the chosen choice (multiple choice); ``extracted`` is the extracted answer (None
    when none was found); ``loglikelihoods`` holds the per-choice sums for MC items."""

    id: str
    category: str
    prediction: str
    extracted: str | None
    correct: bool
    correct_norm: bool | None = None
    loglikelihoods: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "prediction": self.prediction,
            "extracted": self.extracted,
            "correct": self.correct,
        }
        if self.correct_norm is not None:
            out["correct_norm"] = self.correct_norm
        if self.loglikelihoods is not None:
            out["loglikelihoods"] = list(self.loglikelihoods)
        return out


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]: ...


SCORERS: Registry[Callable[..., Scorer]] = Registry("scorer")


@SCORERS.register("exact_match")
@dataclass(frozen=True)
class ExactMatch:
    """Generative exact match after answer extraction and normalisation."""

    pattern: str = DEFAULT_ANSWER_PATTERN
    strip_think: bool = True
    name: str = "exact_match"

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]:
        extractor = AnswerExtractor(self.pattern, self.strip_think)
        outputs = backend.generate([it.prompt for it in items])
        if len(outputs) != len(items):
            raise EvaluationError(
                f"backend returned {len(outputs)} generations for {len(items)} prompts"
            )
        results = []
        for item, text in zip(items, outputs, strict=True):
            extracted = extractor(text)
            correct = extracted is not None and normalise_answer(extracted) == normalise_answer(
                item.answer
            )
            results.append(ItemResult(item.id, item.category, text, extracted, correct))
        return results


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


@SCORERS.register("mc_loglik")
@dataclass(frozen=True)
class MCLoglik:
    """Multiple choice by the summed log-likelihood of each choice (plus the
    byte-length-normalised variant)."""

    name: str = "mc_loglik"

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]:
        requests: list[tuple[str, str]] = []
        for item in items:
            if not item.choices:
                raise EvaluationError(f"item {item.id!r}: mc_loglik needs 'choices'")
            requests.extend((item.prompt, choice) for choice in item.choices)
        scores = backend.loglikelihood(requests)
        if len(scores) != len(requests):
            raise EvaluationError(
                f"backend returned {len(scores)} log-likelihoods for {len(requests)} requests"
            )
        results = []
        pos = 0
        for item in items:
            assert item.choices is not None
            lls = tuple(scores[pos : pos + len(item.choices)])
            pos += len(item.choices)
            if any(math.isnan(v) for v in lls):
                raise EvaluationError(f"item {item.id!r}: log-likelihood is NaN")
            pick = item.choices[_argmax(lls)]
            normed = [
                v / max(1, len(c.encode("utf-8"))) for v, c in zip(lls, item.choices, strict=True)
            ]
            pick_norm = item.choices[_argmax(normed)]
            results.append(
                ItemResult(
                    item.id,
                    item.category,
                    prediction=pick,
                    extracted=pick,
                    correct=pick == item.answer,
                    correct_norm=pick_norm == item.answer,
                    loglikelihoods=lls,
                )
            )
        return results


def make_scorer(name: str, **options: Any) -> Scorer:
    """Build the scorer registered as ``name`` with keyword ``options``."""
    return SCORERS.get(name)(**options)
