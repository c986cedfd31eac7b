"""Early stopping of a candidate whose fitness cannot reach the best so far.

Fitness is the mean over the fitness categories ``C`` of the final accuracy on the
planned items: ``F = (1/|C|) sum_c (k_c + R_c) / N_c`` where ``k_c`` of ``n_c`` scored
items are correct so far, ``N_c`` items are planned and ``R_c`` of the ``N_c - n_c``
items still to score will be correct. After each chunk the rule bounds ``F`` from above,
per category, by taking the not-yet-scored items to be right at the upper end of the
Wilson interval of what was seen (``p_c^+``, at ``z``; 1 while nothing of ``c`` was
scored):

    UCB = (1/|C|) sum_c (k_c + p_c^+ (N_c - n_c)) / N_c

and stops the candidate when ``UCB < best`` (the best fitness of a finished candidate so
far), once at least ``min_items`` items of every category were scored. Every category is
taken at its own upper bound at the same time, so the macro bound is more conservative
than its per-category level. A stopped candidate is a pruned trial whose reported value
is its fitness on the items it saw; it cannot be the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from darwinmerge.evaluate.stats import wilson_interval

__all__ = ["EarlyStopRule", "fitness_of", "category_counts"]


def category_counts(results: Sequence[object]) -> dict[str, tuple[int, int]]:
    """``{category: (correct, scored)}`` of item results (objects with ``category`` and
    ``correct``)."""
    out: dict[str, list[int]] = {}
    for r in results:
        row = out.setdefault(r.category, [0, 0])  # type: ignore[attr-defined]
        row[0] += int(bool(r.correct))  # type: ignore[attr-defined]
        row[1] += 1
    return {c: (k, n) for c, (k, n) in out.items()}


def fitness_of(counts: Mapping[str, tuple[int, int]], categories: Sequence[str]) -> float:
    """Mean over ``categories`` of ``k_c / n_c`` (a category without items counts 0)."""
    if not categories:
        return float("nan")
    total = 0.0
    for c in categories:
        k, n = counts.get(c, (0, 0))
        total += k / n if n else 0.0
    return total / len(categories)


@dataclass(frozen=True)
class EarlyStopRule:
    """``z``: the Wilson level of each category's upper bound (1.96: 97.5% one-sided);
    ``min_items``: scored items every category needs before a stop is allowed."""

    z: float = 1.96
    min_items: int = 4

    def upper_bound(
        self,
        counts: Mapping[str, tuple[int, int]],
        planned: Mapping[str, int],
        categories: Sequence[str],
    ) -> float:
        """The UCB of the final fitness (formula in the module docstring)."""
        total = 0.0
        for c in categories:
            k, n = counts.get(c, (0, 0))
            size = planned.get(c, 0)
            if size == 0:
                continue
            p_high = wilson_interval(k, n, self.z)[1] if n else 1.0
            total += (k + p_high * max(0, size - n)) / size
        return total / len(categories)

    def should_stop(
        self,
        counts: Mapping[str, tuple[int, int]],
        planned: Mapping[str, int],
        categories: Sequence[str],
        best: float | None,
    ) -> bool:
        """True when the candidate's UCB is below ``best``."""
        if best is None:
            return False
        for c in categories:
            if planned.get(c, 0) and counts.get(c, (0, 0))[1] < min(self.min_items, planned[c]):
                return False
        return self.upper_bound(counts, planned, categories) < best
