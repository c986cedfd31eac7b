"""The repair loop: apply the prescription, re-merge, re-score, keep it only if the
fitness score does not drop.

The scoring function is injected (``merge_and_score(recipe) -> float``, higher is
better, on the **fitness** split: the test split never decides anything). The real one
is :class:`darwinmerge.health.fitness.ResidentFitness`.
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


def repair(
    recipe: Recipe,
    verdict: Verdict,
    *,
    merge_and_score: Callable[[Recipe], float],
    recheck: Callable[[Recipe], Verdict] | None = None,
    one_by_one: bool = True,
    baseline: float | None = None,
) -> RepairResult:
    """Try the whole prescription; keep it when ``score >= baseline``. If it is refused
    and ``one_by_one``, try each change alone on top of the changes kept so far (in
    prescription order) and keep each that does not lower the score. ``recheck`` (e.g.
    a rescan of the repaired child) runs once on the final recipe when anything was kept.
    """
    base = merge_and_score(recipe) if baseline is None else baseline
    result = RepairResult(recipe, base, base, [])
    changes = list(verdict.prescription)
    if not changes:
        return result
    n = verdict.num_layers
    whole = apply_changes(recipe, changes, n)
    score = merge_and_score(whole)
    ok = score >= base
    result.attempts.append(RepairAttempt(tuple(c.describe() for c in changes), score, base, ok))
    if ok:
        result.recipe, result.score, result.kept = whole, score, changes
    elif one_by_one and len(changes) > 1:
        current, current_score = recipe, base
        for change in changes:
            candidate = apply_changes(current, [change], n)
            s = merge_and_score(candidate)
            keep = s >= current_score
            result.attempts.append(RepairAttempt((change.describe(),), s, current_score, keep))
            if keep:
                current, current_score = candidate, s
                result.kept.append(change)
        result.recipe, result.score = current, current_score
    if result.kept and recheck is not None:
        result.verdict_after = recheck(result.recipe)
    return result
