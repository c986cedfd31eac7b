"""The results section: the final table (``RUN/final_scores.json``) -> SectionInfo.

Father, mother and child on the test split: each score with its 95% interval per
category and overall (bars with whiskers, and the table), and the child's exact paired
test against each parent (difference, discordant items, p-value, verdict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import BarsInfo, Block, SectionInfo, TableInfo, TextInfo

__all__ = [
    "MODELS",
    "OVERALL",
    "RESULTS_CHART_TITLE",
    "paired_verdict",
    "results_categories",
    "results_section",
]

MODELS = ("father", "mother", "child")
OVERALL = "overall"
RESULTS_CHART_TITLE = "Test split: score per category with 95% intervals"


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _f(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"


def results_categories(scores: Mapping[str, Any]) -> list[str]:
    """The child's categories, then ``overall``."""
    return [c for c in scores["child"] if c != OVERALL] + [OVERALL]


def paired_verdict(row: Mapping[str, Any], parent: str) -> str:
    """The paired test's verdict in words (``A`` is the child, ``B`` the parent)."""
    v = str(row.get("verdict", "?"))
    return {"A better": "child better", "B better": f"{parent} better"}.get(v, v)


def _paired_row(cat: str, parent: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    p = _num(row.get("p_value"))
    return (
        cat,
        parent,
        f"{_num(row.get('diff')):+.3f}",
        str(row.get("a_only", "?")),
        str(row.get("b_only", "?")),
        "n/a" if not np.isfinite(p) else f"{p:.2g}",
        paired_verdict(row, parent),
    )


@SECTIONS.register("results")
def results_section(
    scores: Mapping[str, Any], *, names: Mapping[str, str] | None = None
) -> SectionInfo:
    """Info for the results section from a ``final_scores.json`` dictionary; ``names``
    maps father / mother to the parents' names for the labels."""
    names = dict(names or {})
    label = {m: (f"{m} ({names[m]})" if names.get(m, m) != m else m) for m in MODELS}
    cats = results_categories(scores)
    models = [m for m in MODELS if m in scores]
    series = {label[m]: np.array([_num(scores[m][c]["score"]) for c in cats]) for m in models}
    low = {label[m]: np.array([_num(scores[m][c]["ci_low"]) for c in cats]) for m in models}
    high = {label[m]: np.array([_num(scores[m][c]["ci_high"]) for c in cats]) for m in models}
    rows = []
    for c in cats:
        rows.append(
            (
                f"{c} ({scores['child'][c].get('n', '?')})",
                *(
                    f"{_f(scores[m][c]['score'])} [{_f(scores[m][c]['ci_low'])}, "
                    f"{_f(scores[m][c]['ci_high'])}]"
                    for m in models
                ),
            )
        )
    paired = scores.get("paired") or {}
    tests = tuple(
        _paired_row(c, p, row)
        for c in cats
        for p in ("father", "mother")
        if (row := (paired.get(f"child_vs_{p}") or {}).get(c))
    )
    blocks: list[Block] = [
        BarsInfo(
            RESULTS_CHART_TITLE,
            tuple(cats),
            series,
            low=low,
            high=high,
            ylim=(0.0, 1.0),
            ylabel="accuracy",
            xlabel="category",
            caption="The test split was never read by the search. Whiskers: 95% Wilson "
            "intervals per category; overall: the macro mean over categories.",
        ),
        TableInfo(
            "Final table (test split)",
            ("category (n)", *(f"{label[m]} [95% CI]" for m in models)),
            tuple(rows),
        ),
        TableInfo(
            "Paired tests: child vs each parent",
            ("category", "parent", "child - parent", "child only", "parent only", "p", "verdict"),
            tests,
            caption="Child only / parent only: the items only one of the two got right. p: "
            "exact McNemar test per category, the stratified sign test overall; 'inside the "
            "noise' where it is not significant.",
        ),
    ]
    head = scores["child"][OVERALL]
    blocks.insert(
        0,
        TextInfo(
            f"Overall on {head.get('n', '?')} test items: "
            + "; ".join(
                f"{label[m]} {_f(scores[m][OVERALL]['score'])} "
                f"[{_f(scores[m][OVERALL]['ci_low'])}, {_f(scores[m][OVERALL]['ci_high'])}]"
                for m in models
            )
            + "."
        ),
    )
    return SectionInfo("results", "Final scores", tuple(blocks))
