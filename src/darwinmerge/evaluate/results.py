"""``evaluate``: run a scorer over items and summarise with intervals.

Headline ``overall`` = macro average (unweighted mean of per-category accuracies), so a
large category cannot drown a small one; its interval is :func:`macro_interval`. The
micro average (pooled over items, Wilson interval) is kept as ``micro``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from darwinmerge.errors import ConfigError, EvaluationError
from darwinmerge.evaluate.backends.base import Backend
from darwinmerge.evaluate.scorers import ItemResult, Scorer, make_scorer
from darwinmerge.evaluate.stats import macro_interval, wilson_interval
from darwinmerge.evaluate.tasks import TaskItem, check_unique_ids

__all__ = ["Score", "EvalResult", "evaluate", "summarise", "OVERALL"]

OVERALL = "overall"


@dataclass(frozen=True)
class Score:
    """Accuracy ``score`` with its 95% interval, ``k`` correct of ``n`` items."""

    score: float
    ci_low: float
    ci_high: float
    n: int
    k: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def summarise(
    items: Sequence[ItemResult], metric: str = "correct"
) -> tuple[dict[str, Score], Score, Score]:
    """(per-category scores, macro overall, micro overall) of ``metric`` (``correct``
    or ``correct_norm``)."""
    per_cat: dict[str, list[int]] = {}
    for it in items:
        value = getattr(it, metric)
        if value is None:
            raise EvaluationError(f"item {it.id!r} has no {metric!r} value")
        per_cat.setdefault(it.category, [0, 0])
        per_cat[it.category][0] += int(bool(value))
        per_cat[it.category][1] += 1
    cats = {}
    for name in sorted(per_cat):
        k, n = per_cat[name]
        low, high = wilson_interval(k, n)
        cats[name] = Score(k / n, low, high, n, k)
    counts = [(s.k or 0, s.n) for s in cats.values()]
    m, m_low, m_high = macro_interval(counts)
    total_k = sum(k for k, _ in counts)
    total_n = sum(n for _, n in counts)
    macro = Score(m, m_low, m_high, total_n, None)
    if total_n:
        low, high = wilson_interval(total_k, total_n)
        micro = Score(total_k / total_n, low, high, total_n, total_k)
    else:
        micro = Score(float("nan"), 0.0, 1.0, 0, 0)
    return cats, macro, micro


@dataclass(frozen=True)
class EvalResult:
    """Per-item results and their summary. ``overall`` is the macro average."""

    scorer: str
    items: tuple[ItemResult, ...]
    categories: dict[str, Score]
    overall: Score
    micro: Score

    @classmethod
    def from_items(cls, scorer: str, items: Sequence[ItemResult]) -> EvalResult:
        cats, macro, micro = summarise(items)
        return cls(scorer, tuple(items), cats, macro, micro)

    @property
    def n(self) -> int:
        return len(self.items)

    def table(self) -> dict[str, Score]:
        """Categories then ``"overall"``."""
        return {**self.categories, OVERALL: self.overall}

    def normalised(self) -> EvalResult | None:
        """The same summary on ``correct_norm`` (length-normalised MC), if present."""
        if not self.items or any(it.correct_norm is None for it in self.items):
            return None
        cats, macro, micro = summarise(self.items, "correct_norm")
        return EvalResult(self.scorer + "_norm", self.items, cats, macro, micro)

    def to_dict(self) -> dict[str, Any]:
        return {name: s.to_dict() for name, s in self.table().items()}


def _chunks(items: Sequence[TaskItem], size: int) -> list[Sequence[TaskItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(
    backend: Backend,
    items: Sequence[TaskItem],
    *,
    scorer: str | Scorer = "exact_match",
    progress: bool = False,
    chunk_size: int = 64,
) -> EvalResult:
    """Score ``items`` with ``backend``.

    ``scorer`` is a registered name, ``"auto"`` (``mc_loglik`` for items with choices,
    ``exact_match`` for the others) or a scorer object. Items are sent in chunks of
    ``chunk_size`` (the backend batches within a chunk); ``progress`` shows a bar.
    """
    if not items:
        raise EvaluationError("no items to evaluate (check the task spec and split)")
    check_unique_ids(items)
    if isinstance(scorer, str):
        if scorer == "auto":
            groups: list[tuple[Scorer, list[TaskItem]]] = [
                (make_scorer("mc_loglik"), [it for it in items if it.choices]),
                (make_scorer("exact_match"), [it for it in items if not it.choices]),
            ]
            name = "auto"
        else:
            obj = make_scorer(scorer)
            groups = [(obj, list(items))]
            name = obj.name
    else:
        groups = [(scorer, list(items))]
        name = scorer.name
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    work = [(s, chunk) for s, group in groups if group for chunk in _chunks(group, chunk_size)]
    by_id: dict[str, ItemResult] = {}
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=len(items))
            for s, chunk in work:
                for r in s.score(backend, chunk):
                    by_id[r.id] = r
                bar.advance(task, len(chunk))
    else:
        for s, chunk in work:
            for r in s.score(backend, chunk):
                by_id[r.id] = r
    return EvalResult.from_items(name, [by_id[it.id] for it in items])
