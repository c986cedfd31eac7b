"""Honest selection: choose on fitness, then measure once on the test split.

The winner is the complete trial with the best fitness (for NSGA-II: the Pareto-front
member with the best first objective among those whose ``keep`` category stays within
``tolerance`` of the father's fitness-split score). Then, once, the best ``top_k``
distinct candidates by fitness and both parents are evaluated on the **test** split
(which the search never read) with 95% intervals, each candidate is compared with each
parent by the paired tests of :func:`darwinmerge.evaluate.compare`, and the selection
gap ``fitness - test`` of the winner is reported: the optimism that selecting the best
of many noisy fitness scores builds in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from darwinmerge.evaluate.compare import compare
from darwinmerge.evaluate.tasks import TaskItem
from darwinmerge.evolve.study import genome_key

__all__ = [
    "Selection",
    "ranked_candidates",
    "best_pooled",
    "choose_winner",
    "honest_selection",
    "pooled_fitness",
    "rescore_winner",
]


@dataclass
class Selection:
    winner: int
    winner_fitness: float
    candidates: list[dict[str, Any]] = field(default_factory=list)
    parents: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection_gap: float = float("nan")
    beats_both_parents: bool = False
    test_items: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "winner_fitness": self.winner_fitness,
            "selection_gap": self.selection_gap,
            "beats_both_parents": self.beats_both_parents,
            "test_items": self.test_items,
            "candidates": self.candidates,
            "parents": self.parents,
        }


def ranked_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete, not-cached trials with distinct genomes, best first fitness first."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and "cached_from" not in t.user_attrs
    ]
    trials.sort(key=lambda t: (-(t.values or [0.0])[0], t.number))
    seen: set[tuple[float, ...]] = set()
    out = []
    for t in trials:
        key = genome_key(t.user_attrs.get("genome", []))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def choose_winner(
    study: optuna.Study,
    *,
    keep: str | None = None,
    father_keep: float | None = None,
    tolerance: float = 0.0,
) -> optuna.trial.FrozenTrial | None:
    ranked = ranked_candidates(study)
    if keep is None or father_keep is None:
        return ranked[0] if ranked else None
    front = {t.number for t in study.best_trials}
    ok = [
        t
        for t in ranked
        if t.number in front and (t.values or [0.0, 0.0])[1] >= father_keep - tolerance
    ]
    return ok[0] if ok else (ranked[0] if ranked else None)


def pooled_fitness(search: float, n_search: int, fresh: float, n_fresh: int) -> float:
    """The fitness on the search's items and the fresh items together, weighted by their
    item counts: ``(n_s * f_s + n_f * f_f) / (n_s + n_f)``."""
    return (n_search * search + n_fresh * fresh) / (n_search + n_fresh)


def rescore_winner(
    study: optuna.Study,
    worker: Any,
    fresh_items: Sequence[TaskItem],
    *,
    top: int,
) -> tuple[optuna.trial.FrozenTrial | None, list[dict[str, Any]]]:
    """Score the ``top`` best distinct candidates by search fitness again on
    ``fresh_items`` (fitness-split items the search never used) with the search's score
    (``worker.fitness``); the winner is the best by :func:`pooled_fitness`. Returns the
    winner (None when nothing finished) and one row per re-scored candidate.

    Why: the best of N noisy fitness values is the best candidate plus the largest
    noise; the fresh items' noise is independent of the selection, so the pooled value
    of a candidate that topped the search by luck falls back (tested on a synthetic
    objective with known noise in ``tests/evolve/test_rescore.py``)."""
    ranked = ranked_candidates(study)[:top]
    best, rows = best_pooled(
        [
            (
                float((t.values or [float("nan")])[0]),
                int(t.user_attrs.get("items_used") or t.user_attrs.get("items_planned") or 1),
            )
            for t in ranked
        ],
        lambda rank: worker.fitness(ranked[rank].user_attrs["recipe"], fresh_items),
    )
    rows = [{"trial": t.number, **row} for t, row in zip(ranked, rows, strict=True)]
    return (ranked[best] if best is not None else None), rows


def best_pooled(
    ranked: Sequence[tuple[float, int]], fresh: Callable[[int], tuple[float, int]]
) -> tuple[int | None, list[dict[str, Any]]]:
    """The honest choice among candidates ranked best first by search fitness, given as
    ``(search fitness, items it used)``: ``fresh(rank)`` scores one again on fresh items
    (``(fitness, items)``) and the best by :func:`pooled_fitness` wins (ties to the better
    search rank). Returns its rank (None when there is none) and one row per candidate.
    :func:`rescore_winner` runs it on a study, ``benchmarks/search_suite.py`` on a
    finished run's records."""
    rows: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    for rank, (search, n_search) in enumerate(ranked):
        value, n_fresh = fresh(rank)
        pooled = pooled_fitness(search, n_search, value, n_fresh)
        rows.append(
            {
                "search_rank": rank,
                "search_fitness": search,
                "fresh_fitness": value,
                "fresh_items": n_fresh,
                "pooled_fitness": pooled,
            }
        )
        if best is None or (pooled, -rank) > best:
            best = (pooled, -rank)
    return (None if best is None else -best[1]), rows


def _scores(result: Any) -> dict[str, Any]:
    return {name: s.to_dict() for name, s in result.table().items()}


def honest_selection(
    study: optuna.Study,
    worker: Any,
    test_items: Sequence[TaskItem],
    *,
    parents: Sequence[str],
    winner: optuna.trial.FrozenTrial,
    top_k: int = 3,
    alpha: float = 0.05,
) -> Selection:
    """Evaluate the winner, the next best candidates (``top_k`` in all) and the parents
    on ``test_items``; paired tests of every candidate against every parent."""
    ranked = [winner] + [t for t in ranked_candidates(study) if t.number != winner.number]
    chosen = ranked[:top_k]
    parent_results = {p: worker.evaluate_model(f"parent:{p}", test_items) for p in parents}
    selection = Selection(winner=winner.number, winner_fitness=float((winner.values or [0])[0]))
    selection.test_items = len(test_items)
    selection.parents = {p: _scores(r) for p, r in parent_results.items()}
    for rank, t in enumerate(chosen):
        result = worker.evaluate_model(t.user_attrs["recipe"], test_items)
        row: dict[str, Any] = {
            "trial": t.number,
            "rank": rank,
            "fitness": float((t.values or [0])[0]),
            "fitness_per_category": t.user_attrs.get("fitness"),
            "test": _scores(result),
            "vs": {},
        }
        beats = True
        for p, pres in parent_results.items():
            comp = compare(result, pres, name_a=f"trial {t.number}", name_b=p, alpha=alpha)
            row["vs"][p] = comp.to_dict()
            overall = comp.rows["overall"]
            beats = beats and overall.diff > 0
        row["beats_both_parents"] = beats
        row["selection_gap"] = row["fitness"] - result.overall.score
        selection.candidates.append(row)
        if t.number == winner.number:
            selection.selection_gap = row["selection_gap"]
            selection.beats_both_parents = beats
    return selection
