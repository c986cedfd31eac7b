"""The repair loop: apply the prescription, re-merge, re-score, keep it only if the
fitness score does not drop.

The scoring function is injected (``merge_and_score(recipe) -> float``, higher is
better, on the **fitness** split: the test split never decides anything). The real one
is :class:`darwinmerge.health.fitness.ResidentFitness`, the search's own candidate
scorer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from darwinmerge.health.apply import apply_changes
from darwinmerge.health.changes import RecipeChange
from darwinmerge.health.verdict import Verdict
from darwinmerge.merge.recipe import Recipe

__all__ = ["RepairAttempt", "RepairResult", "repair"]


@dataclass(frozen=True)
class RepairAttempt:
    """One scored try: the changes on top of the recipe kept so far."""

    changes: tuple[str, ...]
    score: float
    reference: float
    kept: bool


@dataclass
class RepairResult:
    recipe: Recipe  # the repaired recipe, or the original one when nothing was kept
    baseline: float
    score: float
    kept: list[RecipeChange]
    attempts: list[RepairAttempt] = field(default_factory=list)
    verdict_after: Verdict | None = None

    @property
    def repaired(self) -> bool:
        return bool(self.kept)


def _one_round(
    recipe: Recipe,
    changes: list[RecipeChange],
    base: float,
    n: int,
    merge_and_score: Callable[[Recipe], float],
    one_by_one: bool,
    attempts: list[RepairAttempt],
) -> tuple[Recipe, float, list[RecipeChange]]:
    # a change that leaves the recipe as it is repairs nothing: never "keep" it
    changes = [c for c in changes if apply_changes(recipe, [c], n) != recipe]
    if not changes:
        return recipe, base, []
    whole = apply_changes(recipe, changes, n)
    score = merge_and_score(whole)
    ok = score >= base
    attempts.append(RepairAttempt(tuple(c.describe() for c in changes), score, base, ok))
    if ok:
        return whole, score, list(changes)
    kept: list[RecipeChange] = []
    current, current_score = recipe, base
    if one_by_one and len(changes) > 1:
        for change in changes:
            candidate = apply_changes(current, [change], n)
            s = merge_and_score(candidate)
            keep = s >= current_score
            attempts.append(RepairAttempt((change.describe(),), s, current_score, keep))
            if keep:
                current, current_score = candidate, s
                kept.append(change)
    return current, current_score, kept


def repair(
    recipe: Recipe,
    verdict: Verdict,
    *,
    merge_and_score: Callable[[Recipe], float],
    recheck: Callable[[Recipe], Verdict] | None = None,
    one_by_one: bool = True,
    rounds: int = 1,
    baseline: float | None = None,
) -> RepairResult:
    """Try the whole prescription; keep it when ``score >= baseline``. If it is refused
    and ``one_by_one``, try each change alone on top of the changes kept so far (in
    prescription order) and keep each that does not lower the score.

    ``recheck`` (e.g. a rescan of the repaired child) runs on the recipe kept so far after
    every round that kept something; with ``rounds > 1`` its verdict's prescription is
    the next round's (until nothing is kept or nothing is prescribed). The score never
    drops below the baseline: every kept step is compared with the one before.
    """
    base = merge_and_score(recipe) if baseline is None else baseline
    result = RepairResult(recipe, base, base, [])
    current = verdict
    for _ in range(max(rounds, 1)):
        changes = list(current.prescription)
        if not changes:
            break
        result.recipe, result.score, kept = _one_round(
            result.recipe,
            changes,
            result.score,
            verdict.num_layers,
            merge_and_score,
            one_by_one,
            result.attempts,
        )
        result.kept.extend(kept)
        if not kept or recheck is None:
            break
        current = recheck(result.recipe)
        result.verdict_after = current
    return result
