"""Scorers turn a backend and items into per-item results.

* ``exact_match`` (generative): greedy generation, answer extraction
  (:class:`AnswerExtractor`), then ``normalise_answer(extracted) == normalise_answer(answer)``.
* ``mc_loglik`` (multiple choice): summed log-likelihood of each choice as a
  continuation of the prompt; the argmax is the prediction (ties go to the first
  choice). The length-normalised variant divides each sum by the choice's UTF-8 byte
  length and is kept as ``correct_norm``.
* ``gold_logprob`` (continuous, no generation): one forward pass per item; the value is
  ``L = log p(gold | prompt) = sum_i log softmax(logits_i)[gold_i]`` over the gold
  continuation's tokens (natural log), where gold is the item's ``target`` (the whole
  worked answer) or, without one, its ``answer``. ``correct`` is ``L > log(1/2)``: a
  continuation with probability above 1/2 has every token above 1/2, so greedy
  decoding writes exactly it (a sufficient, not a necessary, condition of a right
  greedy answer).
* ``gold_prob``: the same forward pass, value ``exp(L)`` in [0, 1], the probability
  that sampling at temperature 1 writes the gold continuation; its mean over items is
  the expected exact match of that sampler, on accuracy's scale.
* ``gold_margin``: the same forward pass, read for greedy decoding: the item's margin
  ``m`` is the smallest, over the gold continuation's tokens, of ``log p(gold token) -
  log p(best other token)`` (teacher-forced). ``m > 0`` exactly when greedy decoding
  writes the whole gold continuation, so ``correct`` is greedy exact match of the worked
  answer without generating; ``value`` is ``sigmoid(m / temperature)``, a smoothed
  version of it in [0, 1]. Unlike ``gold_prob`` (convex in the log-probability: it pays
  more for making some items certain than for making many items right), it agrees with
  greedy exact match across merges of two specialists (benchmarks/score_agreement.py).
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
    "GoldLogprob",
    "GoldProb",
    "GoldMargin",
    "CONTINUOUS_SCORERS",
    "make_scorer",
]


@dataclass(frozen=True)
class ItemResult:
    """The outcome on one item. ``prediction`` is the raw generation (exact match) or
    the chosen choice (multiple choice); ``extracted`` is the extracted answer (None
    when none was found); ``loglikelihoods`` holds the per-choice sums for MC items;
    ``value`` is the continuous scorers' per-item score (None for the others)."""

    id: str
    category: str
    prediction: str
    extracted: str | None
    correct: bool
    correct_norm: bool | None = None
    loglikelihoods: tuple[float, ...] | None = None
    value: float | None = None

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
        if self.value is not None:
            out["value"] = self.value
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


CONTINUOUS_SCORERS: tuple[str, ...] = ("gold_logprob", "gold_prob", "gold_margin")
"""Scorers whose ``ItemResult.value`` is the per-item score (the fitness averages it)."""

_HALF = math.log(0.5)


def _gold_loglik(backend: Backend, items: Sequence[TaskItem]) -> list[float]:
    lls = backend.loglikelihood([(it.prompt, it.gold) for it in items])
    if len(lls) != len(items):
        raise EvaluationError(f"backend returned {len(lls)} log-likelihoods for {len(items)} items")
    for it, v in zip(items, lls, strict=True):
        if math.isnan(v):
            raise EvaluationError(f"item {it.id!r}: log-likelihood of the gold answer is NaN")
    return lls


@SCORERS.register("gold_logprob")
@dataclass(frozen=True)
class GoldLogprob:
    """``value``: log-probability of the gold continuation (``target`` or ``answer``)."""

    name: str = "gold_logprob"

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]:
        return [
            ItemResult(it.id, it.category, it.gold, None, ll > _HALF, value=ll)
            for it, ll in zip(items, _gold_loglik(backend, items), strict=True)
        ]


@SCORERS.register("gold_prob")
@dataclass(frozen=True)
class GoldProb:
    """``value``: probability ``exp(log p(gold | prompt))`` of the gold continuation."""

    name: str = "gold_prob"

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]:
        return [
            ItemResult(it.id, it.category, it.gold, None, ll > _HALF, value=math.exp(ll))
            for it, ll in zip(items, _gold_loglik(backend, items), strict=True)
        ]


@SCORERS.register("gold_margin")
@dataclass(frozen=True)
class GoldMargin:
    """``value``: ``sigmoid(m / temperature)`` of the item's greedy margin ``m`` (natural
    log units); ``correct``: ``m > 0``, greedy decoding writes the gold continuation."""

    temperature: float = 1.0
    """Natural-log units. At 1, on the fitness split, the value ranks a search's
    candidates as greedy exact match ranks them on test on all seven problems of the
    merge-problem suite (Spearman +0.86 to +0.96, split-half reliability 0.92-0.98;
    benchmarks/score_agreement.py, docs/evolve.md); sharper (0.25) is noisier."""
    name: str = "gold_margin"

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise EvaluationError(f"gold_margin: temperature must be > 0, got {self.temperature}")

    def score(self, backend: Backend, items: Sequence[TaskItem]) -> list[ItemResult]:
        margins = getattr(backend, "gold_margins", None)
        if margins is None:
            raise EvaluationError(
                f"the gold_margin score needs per-token log-probabilities, which the "
                f"{type(backend).__name__} backend does not give; use score: gold_prob"
            )
        pairs = margins([(it.prompt, it.gold) for it in items])
        if len(pairs) != len(items):
            raise EvaluationError(f"backend returned {len(pairs)} margins for {len(items)} items")
        out = []
        for it, (ll, m) in zip(items, pairs, strict=True):
            if math.isnan(ll) or math.isnan(m):
                raise EvaluationError(f"item {it.id!r}: log-likelihood of the gold answer is NaN")
            z = max(min(m / self.temperature, 700.0), -700.0)
            out.append(ItemResult(it.id, it.category, it.gold, None, m > 0.0, value=_sigmoid(z)))
        return out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def make_scorer(name: str, **options: Any) -> Scorer:
    """Build the scorer registered as ``name`` with keyword ``options``."""
    return SCORERS.get(name)(**options)
