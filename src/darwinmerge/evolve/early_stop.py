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

With a continuous score (the gold answer's probability or log-probability) there are no
0/1 counts to bound. The rule then races the candidate against the **incumbent** (the
best finished candidate) on the same items, paired: with ``d_i = x_i - y_i`` the
difference of the candidate's and the incumbent's value on item ``i``, ``n_c`` of
``N_c`` items of category ``c`` scored, their sum ``D_c``, mean ``m_c`` and sample
variance ``s_c^2``, and ``r_c = N_c - n_c`` left, the final fitness difference is
``Delta = (1/|C|) sum_c (D_c + R_c) / N_c``. The unscored rest ``R_c`` is predicted from
the scored items as a random sample of the planned ones (the subset is a seeded shuffle):
mean ``r_c m_c``, variance ``s_c^2 r_c (r_c + n_c) / n_c`` (the rest's own spread plus the
uncertainty of ``m_c``). The bound

    UCB = (1/|C|) sum_c (D_c + r_c m_c) / N_c
          + z sqrt(sum_c s_c^2 r_c (r_c + n_c) / n_c / (|C| N_c)^2)

stops the candidate when ``UCB < 0``, once every category has ``max(min_items, 2)``
scored items. Pairing is what makes this cheap: the items' own difficulty cancels in
``d_i``, so two merges of the same parents differ far less per item than either varies.
"""

from __future__ import annotations

import math
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

    def paired_upper_bound(
        self,
        diffs: Mapping[str, Sequence[float]],
        planned: Mapping[str, int],
        categories: Sequence[str],
    ) -> float:
        """The UCB of the final fitness difference candidate - incumbent from the paired
        per-item differences scored so far (``diffs[c]``; formula in the module
        docstring). A category with fewer than two scored items bounds nothing: +inf."""
        mean = var = 0.0
        k = len(categories)
        for c in categories:
            size = planned.get(c, 0)
            if size == 0:
                continue
            d = diffs.get(c, ())
            n = len(d)
            if n < 2:
                return math.inf
            m = sum(d) / n
            s2 = sum((x - m) ** 2 for x in d) / (n - 1)
            rest = max(0, size - n)
            mean += (sum(d) + rest * m) / (k * size)
            var += s2 * rest * (rest + n) / n / (k * size) ** 2
        return mean + self.z * math.sqrt(var)

    def should_stop_paired(
        self,
        diffs: Mapping[str, Sequence[float]],
        planned: Mapping[str, int],
        categories: Sequence[str],
    ) -> bool:
        """True when the candidate's paired UCB against the incumbent is below 0."""
        need = max(self.min_items, 2)
        for c in categories:
            if planned.get(c, 0) and len(diffs.get(c, ())) < min(need, planned[c]):
                return False
        return self.paired_upper_bound(diffs, planned, categories) < 0.0
