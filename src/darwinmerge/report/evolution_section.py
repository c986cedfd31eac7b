"""The evolution section: an ``evolution.json`` payload (``darwin evolve``) -> SectionInfo.

The curve: every candidate's fitness in trial order (complete candidates and the partial
fitness of those early stopping pruned, as separate series), and the best fitness so far
(the running maximum over complete candidates). Then the fitness per category of every
candidate, the best candidates, the early-stopping audit and the honest selection on the
test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import Block, HeatmapInfo, LinesInfo, SectionInfo, TableInfo, TextInfo

__all__ = ["CURVE_TITLE", "Curve", "evolution_curve", "evolution_section", "trial_fitness"]

CURVE_TITLE = "Fitness per candidate"


def _value(record: Mapping[str, Any]) -> float:
    values = record.get("values")
    if not values or values[0] is None:
        return float("nan")
    return float(values[0])


def trial_fitness(record: Mapping[str, Any]) -> float:
    """The first objective of a trial record (NaN when it has none)."""
    return _value(record)


@dataclass(frozen=True)
class Curve:
    """Per trial (in trial order): number, state, fitness (NaN for failed ones) and the
    best fitness of the complete trials so far (NaN before the first)."""

    trials: tuple[int, ...]
    states: tuple[str, ...]
    fitness: np.ndarray
    best: np.ndarray

    def where(self, state: str) -> np.ndarray:
        return np.array([s == state for s in self.states], dtype=bool)


def evolution_curve(records: Sequence[Mapping[str, Any]]) -> Curve:
    """The curve's numbers from ``evolution.json``'s trial records."""
    rows = sorted(records, key=lambda r: int(r["number"]))
    fit = np.array([_value(r) for r in rows], dtype=float)
    states = tuple(str(r["state"]) for r in rows)
    best = np.full(len(rows), np.nan)
    top = -np.inf
    for i, (f, s) in enumerate(zip(fit, states, strict=True)):
        if s == "complete" and np.isfinite(f):
            top = max(top, float(f))
        if np.isfinite(top):
            best[i] = top
    return Curve(tuple(int(r["number"]) for r in rows), states, fit, best)


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(s: Mapping[str, Any]) -> str:
    return f"{_f(s.get('score'))} [{_f(s.get('ci_low'))}, {_f(s.get('ci_high'))}]"


@SECTIONS.register("evolution")
def evolution_section(payload: Mapping[str, Any]) -> SectionInfo:
    """Info for the evolution section (numbers straight from ``evolution.json``)."""
    records = list(payload.get("trials") or [])
    curve = evolution_curve(records)
    cats = list(payload.get("categories") or [])
    n = len(curve.trials)
    done, pruned, failed = (int(curve.where(s).sum()) for s in ("complete", "pruned", "fail"))
    winner = payload.get("winner") or {}
    wfit = (winner.get("values") or [None])[0]
    blocks: list[Block] = [
        TextInfo(
            f"Optimizer {payload.get('optimizer', '?')}: {n} candidates of a budget of "
            f"{payload.get('budget', n)} ({done} complete, {pruned} stopped early, {failed} "
            f"failed). Fitness: mean accuracy over {', '.join(cats) or 'the categories'} on "
            f"the fitness split. Winner: trial {winner.get('trial', '?')}, fitness {_f(wfit)}."
        )
    ]
    complete = np.where(curve.where("complete"), curve.fitness, np.nan)
    stopped = np.where(curve.where("pruned"), curve.fitness, np.nan)
    series = {"best so far": curve.best, "complete candidate": complete}
    if pruned:
        series["stopped early (partial fitness)"] = stopped
    blocks.append(
        LinesInfo(
            CURVE_TITLE,
            curve.trials,
            series,
            ylabel="fitness (fitness split)",
            xlabel="trial",
            points=("complete candidate", "stopped early (partial fitness)"),
            caption="Each point is one candidate; stopped candidates show the fitness of the "
            "items scored when early stopping ended them. Best so far: the running maximum "
            "over complete candidates. Failed candidates have no point.",
        )
    )
    if cats and records:
        rows = sorted(records, key=lambda r: int(r["number"]))
        grid = np.full((len(cats), len(rows)), np.nan)
        for j, r in enumerate(rows):
            per = r.get("fitness") or {}
            for i, c in enumerate(cats):
                v = per.get(c)
                if v is not None:
                    grid[i, j] = float(v)
        blocks.append(
            HeatmapInfo(
                "Fitness per category and candidate",
                tuple(cats),
                tuple(str(t) for t in curve.trials),
                grid,
                colorbar="accuracy (fitness split)",
                xlabel="trial",
                caption="Blank: a failed candidate or a category early stopping never reached.",
            )
        )
    ranked = [
        r
        for r in sorted(records, key=lambda r: (-_value(r), int(r["number"])))
        if r["state"] == "complete" and np.isfinite(_value(r))
    ]
    top = ranked[:8]
    if top:
        blocks.append(
            TableInfo(
                "Best candidates",
                ("trial", "fitness", *cats, "merge s", "eval s", "items", "genes"),
                tuple(
                    (
                        str(r["number"])
                        + (" (winner)" if r["number"] == winner.get("trial") else ""),
                        _f(_value(r)),
                        *(_f((r.get("fitness") or {}).get(c)) for c in cats),
                        _f(r.get("merge_seconds"), 2),
                        _f(r.get("eval_seconds"), 2),
                        str(r.get("items_used") or 0),
                        _genes(r.get("genes")),
                    )
                    for r in top
                ),
            )
        )
    es = payload.get("early_stop") or {}
    if es:
        used, saved = int(es.get("items_used", 0)), int(es.get("items_saved", 0))
        blocks.append(
            TextInfo(
                f"Early stopping ended {es.get('stopped', 0)} candidates and saved {saved} of "
                f"{used + saved} item evaluations; {es.get('false_stops', 0)} of the stopped "
                "candidates would have beaten the best fitness known when they were stopped."
            )
        )
    sel = payload.get("selection")
    if sel:
        rows_sel = [
            (f"parent {p}", "-", _ci(s.get("overall", {})), "-")
            for p, s in (sel.get("parents") or {}).items()
        ]
        for c in sel.get("candidates") or []:
            rows_sel.append(
                (
                    f"trial {c['trial']}"
                    + (" (winner)" if c["trial"] == sel.get("winner") else ""),
                    _f(c.get("fitness")),
                    _ci((c.get("test") or {}).get("overall", {})),
                    _f(c.get("selection_gap")),
                )
            )
        blocks.append(
            TableInfo(
                "Honest selection on the test split",
                ("model", "fitness", "test overall [95% CI]", "fitness - test"),
                tuple(rows_sel),
                caption=f"{sel.get('test_items', 0)} test-split items the search never read; "
                f"the winner's selection gap is {_f(sel.get('selection_gap'))}.",
            )
        )
    return SectionInfo("evolution", "Evolution", tuple(blocks))


def _genes(genes: Mapping[str, Any] | None) -> str:
    if not genes:
        return "-"
    parts = []
    for k, v in genes.items():
        parts.append(f"{k}={v:.2g}" if isinstance(v, int | float) else f"{k}={v}")
    text = ", ".join(parts)
    return text if len(text) <= 100 else text[:97] + "..."
