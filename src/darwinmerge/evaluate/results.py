"""``evaluate``: run a scorer over items and summarise with intervals.

Headline ``overall`` = macro average (unweighted mean of per-category accuracies), so a
large category cannot drown a small one; its interval is :func:`macro_interval`. The
micro average (pooled over items, Wilson interval) is kept as ``micro``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from darwinmerge.errors import ConfigError, EvaluationError
from darwinmerge.evaluate.backends.base import Backend
from darwinmerge.evaluate.scorers import ItemResult, Scorer, make_scorer
from darwinmerge.evaluate.stats import macro_interval, wilson_interval
from darwinmerge.evaluate.tasks import TaskItem, check_unique_ids

__all__ = [
    "Score",
    "EvalResult",
    "ChunkReport",
    "evaluate",
    "summarise",
    "category_values",
    "OVERALL",
]

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


def category_values(items: Sequence[ItemResult]) -> dict[str, tuple[float, int]]:
    """``{category: (mean value, n)}`` of a continuous scorer's results (``value``); an
    item without a value raises (a generative or MC result)."""
    sums: dict[str, list[float]] = {}
    for it in items:
        if it.value is None:
            raise EvaluationError(f"item {it.id!r} has no continuous value (use gold_logprob)")
        row = sums.setdefault(it.category, [0.0, 0.0])
        row[0] += it.value
        row[1] += 1
    return {c: (total / n, int(n)) for c, (total, n) in sorted(sums.items())}


@dataclass(frozen=True)
class EvalResult:
    """Per-item results and their summary. ``overall`` is the macro average.

    ``stopped`` is True when an ``on_chunk`` callback ended the evaluation early; then
    ``items`` holds only the scored items and ``n_planned`` the number asked for.
    """

    scorer: str
    items: tuple[ItemResult, ...]
    categories: dict[str, Score]
    overall: Score
    micro: Score
    stopped: bool = False
    n_planned: int | None = None

    @classmethod
    def from_items(
        cls,
        scorer: str,
        items: Sequence[ItemResult],
        *,
        stopped: bool = False,
        n_planned: int | None = None,
    ) -> EvalResult:
        cats, macro, micro = summarise(items)
        planned = len(items) if n_planned is None else n_planned
        return cls(scorer, tuple(items), cats, macro, micro, stopped, planned)

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


@dataclass(frozen=True)
class ChunkReport:
    """What an ``on_chunk`` callback sees after each chunk: the items scored so far
    (``results``, in scoring order), their per-category summary, and per category how
    many items were planned in all (``planned``)."""

    chunk: int
    done: int
    total: int
    results: tuple[ItemResult, ...]
    categories: dict[str, Score]
    planned: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> dict[str, int]:
        """Items of each planned category still to score."""
        seen: dict[str, int] = {}
        for r in self.results:
            seen[r.category] = seen.get(r.category, 0) + 1
        return {c: n - seen.get(c, 0) for c, n in self.planned.items()}


def _chunks(items: Sequence[TaskItem], size: int) -> list[Sequence[TaskItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(
    backend: Backend,
    items: Sequence[TaskItem],
    *,
    scorer: str | Scorer = "exact_match",
    progress: bool = False,
    chunk_size: int = 64,
    on_chunk: Callable[[ChunkReport], bool] | None = None,
) -> EvalResult:
    """Score ``items`` with ``backend``.

    ``scorer`` is a registered name, ``"auto"`` (``mc_loglik`` for items with choices,
    ``exact_match`` for the others) or a scorer object. Items are sent in chunks of
    ``chunk_size`` (the backend batches within a chunk), in the order given; ``progress``
    shows a bar. After each chunk ``on_chunk`` (if given) receives a :class:`ChunkReport`
    of everything scored so far; returning ``False`` stops the evaluation and the result
    says so (``stopped``, with only the scored items). After the last chunk the
    callback is still called but nothing is left to stop. Use
    :func:`~darwinmerge.evaluate.tasks.stratified_subset` for an order whose every
    prefix is stratified.
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
    planned: dict[str, int] = {}
    for it in items:
        planned[it.category] = planned.get(it.category, 0) + 1
    by_id: dict[str, ItemResult] = {}
    order: list[ItemResult] = []
    stopped = False

    def run(advance: Callable[[int], None]) -> bool:
        for index, (s, chunk) in enumerate(work):
            for r in s.score(backend, chunk):
                by_id[r.id] = r
                order.append(r)
            advance(len(chunk))
            if on_chunk is not None:
                cats, _, _ = summarise(order)
                report = ChunkReport(index, len(order), len(items), tuple(order), cats, planned)
                if on_chunk(report) is False and index + 1 < len(work):
                    return True
        return False

    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=len(items))
            stopped = run(lambda n: bar.advance(task, n))
    else:
        stopped = run(lambda n: None)
    scored = [by_id[it.id] for it in items if it.id in by_id]
    return EvalResult.from_items(name, scored, stopped=stopped, n_planned=len(items))
