"""Paired comparison of two results on the same items.

Per category: exact McNemar on the discordant items. Overall (macro average): the
stratified sign test of :func:`stratified_sign_test`. Verdict at ``alpha``: "A better" /
"B better" when p < alpha, else "inside the noise".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from darwinmerge.errors import EvaluationError
from darwinmerge.evaluate.results import OVERALL, EvalResult
from darwinmerge.evaluate.stats import mcnemar_exact, stratified_sign_test

__all__ = ["PairedRow", "Comparison", "compare", "verdict"]

NOISE = "inside the noise"


def verdict(diff: float, p_value: float, alpha: float = 0.05) -> str:
    if p_value < alpha and diff != 0:
        return "A better" if diff > 0 else "B better"
    return NOISE


@dataclass(frozen=True)
class PairedRow:
    """``diff`` = score_a - score_b; ``a_only`` items only A got right, ``b_only``
    items only B got right."""

    score_a: float
    score_b: float
    diff: float
    a_only: int
    b_only: int
    n: int
    p_value: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Comparison:
    name_a: str
    name_b: str
    rows: dict[str, PairedRow]  # categories then "overall"
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.name_a,
            "b": self.name_b,
            "alpha": self.alpha,
            "rows": {k: r.to_dict() for k, r in self.rows.items()},
        }


def compare(
    result_a: EvalResult,
    result_b: EvalResult,
    *,
    name_a: str = "A",
    name_b: str = "B",
    alpha: float = 0.05,
) -> Comparison:
    """Paired comparison; both results must cover the same item ids."""
    a = {it.id: it for it in result_a.items}
    b = {it.id: it for it in result_b.items}
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise EvaluationError(
            f"compare: results cover different items ({len(only)} differ, e.g. {only[0]!r}); "
            f"evaluate both models on the same tasks and split"
        )
    counts: dict[str, list[int]] = {}
    for item_id, ra in a.items():
        rb = b[item_id]
        if ra.category != rb.category:
            raise EvaluationError(f"compare: item {item_id!r} has different categories")
        row = counts.setdefault(ra.category, [0, 0, 0])
        row[0] += int(ra.correct and not rb.correct)
        row[1] += int(rb.correct and not ra.correct)
        row[2] += 1
    rows: dict[str, PairedRow] = {}
    for cat in sorted(counts):
        a_only, b_only, n = counts[cat]
        sa, sb = result_a.categories[cat].score, result_b.categories[cat].score
        p = mcnemar_exact(a_only, b_only)
        rows[cat] = PairedRow(sa, sb, sa - sb, a_only, b_only, n, p, verdict(sa - sb, p, alpha))
    strata = [tuple(counts[c]) for c in sorted(counts)]
    p_all = stratified_sign_test([(x, y, z) for x, y, z in strata])
    sa, sb = result_a.overall.score, result_b.overall.score
    rows[OVERALL] = PairedRow(
        sa,
        sb,
        sa - sb,
        sum(s[0] for s in strata),
        sum(s[1] for s in strata),
        sum(s[2] for s in strata),
        p_all,
        verdict(sa - sb, p_all, alpha),
    )
    return Comparison(name_a, name_b, rows, alpha)
