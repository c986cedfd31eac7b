"""The final table: father, mother and child on the test split.

Each model is loaded from its folder (the child as written, so the table scores what a
user gets), scored on the test split (which the search never read) with 95% intervals
per category and the macro ``overall``, and the child is compared with each parent by
the exact paired tests of :func:`darwinmerge.evaluate.compare`.

``final_scores.json``::

    {"father" | "mother" | "child" | "start": {CATEGORY | "overall": {"score", "ci_low", ...}},
     "paired": {"child_vs_father" | "child_vs_mother" | "child_vs_start":
                {CATEGORY | "overall": {"score_a", "score_b", "diff", "a_only", "b_only",
                                         "n", "p_value", "verdict"}}}}

:func:`scores_from_items` recomputes the same dictionary from the per-item results saved
beside it (``final/results.json``), so the table can be checked against its items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darwinmerge.evaluate.compare import Comparison, compare
from darwinmerge.evaluate.results import EvalResult
from darwinmerge.evaluate.scorers import ItemResult
from darwinmerge.evaluate.tasks import TaskItem

__all__ = [
    "FINAL_SCORES_FILE",
    "MODELS",
    "START",
    "FinalScores",
    "evaluate_final",
    "final_intervals_table",
    "final_scores_table",
    "final_table",
    "scores_from_items",
]

FINAL_SCORES_FILE = "final_scores.json"
MODELS = ("father", "mother", "child")
PARENT_MODELS = ("father", "mother")
START = "start"
"""The search's own start: the prior's recipe merged with no search (``final.vs_start``)."""


@dataclass(frozen=True)
class FinalScores:
    results: dict[str, EvalResult]  # father, mother, child
    paired: dict[str, Comparison]  # child_vs_father, child_vs_mother
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        from darwinmerge.evaluate.results_io import _clean

        out: dict[str, Any] = {name: r.to_dict() for name, r in self.results.items()}
        out["paired"] = {
            key: {cat: row.to_dict() for cat, row in c.rows.items()}
            for key, c in self.paired.items()
        }
        cleaned: dict[str, Any] = _clean(out)
        return cleaned


def _paired(results: Mapping[str, EvalResult], alpha: float) -> dict[str, Comparison]:
    """The child against each parent, and against its own start when it was scored."""
    return {
        f"child_vs_{p}": compare(
            results["child"], results[p], name_a="child", name_b=p, alpha=alpha
        )
        for p in (*PARENT_MODELS, START)
        if p in results
    }


def evaluate_final(
    models: Mapping[str, str | Path],
    items: Sequence[TaskItem],
    *,
    alpha: float = 0.05,
    backend: str = "transformers",
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 32,
    max_new_tokens: int = 32,
    scorer: str = "auto",
) -> FinalScores:
    """Score ``models`` (keys: father, mother, child, and optionally start) on ``items``
    (the test split) with the registered ``backend`` and ``scorer`` (the search's), one
    model resident at a time."""
    from darwinmerge.dtypes import torch_dtype
    from darwinmerge.evaluate.backends import make_backend
    from darwinmerge.evaluate.results import evaluate

    options: dict[str, Any] = {"dtype": torch_dtype(dtype), "batch_size": batch_size}
    options["max_new_tokens"] = max_new_tokens
    if backend == "transformers":
        options["device"] = device
    results: dict[str, EvalResult] = {}
    for name in (*MODELS, START):
        if name not in models:
            continue
        runner = make_backend(backend, str(models[name]), None, **options)
        results[name] = evaluate(runner, items, scorer=scorer)
        del runner
    return FinalScores(results, _paired(results, alpha), alpha)


def scores_from_items(payload: Mapping[str, Any], alpha: float = 0.05) -> dict[str, Any]:
    """``final_scores.json`` recomputed from a ``results.json`` payload's per-item results
    (``payload["items"][model]``, as :func:`~darwinmerge.evaluate.results_payload` writes)."""
    results = {}
    for name in (*MODELS, START):
        if name not in payload["items"]:
            continue
        rows = payload["items"][name]
        items = []
        for row in rows:
            kw = {k: v for k, v in row.items() if k in ItemResult.__dataclass_fields__}
            if kw.get("loglikelihoods") is not None:
                kw["loglikelihoods"] = tuple(kw["loglikelihoods"])
            items.append(ItemResult(**kw))
        results[name] = EvalResult.from_items(payload.get("scorer", "auto"), items)
    return FinalScores(results, _paired(results, alpha), alpha).to_dict()


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "nan" if x is None or x != x else format(x, fmt)


def _p(p: float | None) -> str:
    """A p-value in at most six characters: 0.027, 1.000, 3e-07, <1e-99."""
    if p is None or p != p:
        return "nan"
    if p < 1e-99:
        return "<1e-99"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def _cell(s: Mapping[str, Any]) -> str:
    return f"{s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _paired_cell(row: Mapping[str, Any]) -> str:
    p = row["p_value"]
    return f"{row['diff']:+.3f} ({row['a_only']}/{row['b_only']}, p={p:.2g})"


def final_table(scores: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the final table from a ``final_scores.json`` dictionary: one row
    per category then ``overall``; each model's score with its 95% interval, and the
    child's paired difference against each parent (discordant items, exact p)."""
    header = [
        "category (n)",
        *MODELS,
        "child - father (child/father only, p)",
        "child - mother (p)",
    ]
    rows = []
    for cat in _categories(scores):
        n = scores["child"][cat]["n"]
        rows.append(
            [
                f"{cat} ({n})",
                *(_cell(scores[m][cat]) for m in MODELS),
                _paired_cell(scores["paired"]["child_vs_father"][cat]),
                _paired_cell(scores["paired"]["child_vs_mother"][cat]),
            ]
        )
    return header, rows


def _categories(scores: Mapping[str, Any]) -> list[str]:
    from darwinmerge.evaluate.results import OVERALL

    return [c for c in scores["child"] if c != OVERALL] + [OVERALL]


def final_scores_table(scores: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the final table's compact layout (fits 80 columns with
    :func:`final_intervals_table`): per category its n, each model's score, and the
    child's difference from each parent with its exact paired p."""
    header = ["category", "n", *MODELS, "vs father", "p", "vs mother", "p"]
    rows = []
    for cat in _categories(scores):
        row = [cat, str(scores["child"][cat]["n"])]
        row += [_num(scores[m][cat]["score"]) for m in MODELS]
        for parent in ("father", "mother"):
            paired = scores["paired"][f"child_vs_{parent}"][cat]
            row += [_num(paired["diff"], "+.3f"), _p(paired["p_value"])]
        rows.append(row)
    return header, rows


def final_intervals_table(scores: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the compact layout's second table: each model's 95% interval
    per category, and the discordant items of the child against each parent (items only
    the child got right / only the parent got right)."""
    header = ["category", *MODELS, "vs father", "vs mother"]
    rows = []
    for cat in _categories(scores):
        row = [cat]
        row += [
            f"{_num(scores[m][cat]['ci_low'])}-{_num(scores[m][cat]['ci_high'])}" for m in MODELS
        ]
        for parent in ("father", "mother"):
            paired = scores["paired"][f"child_vs_{parent}"][cat]
            row.append(f"{paired['a_only']}/{paired['b_only']}")
        rows.append(row)
    return header, rows
