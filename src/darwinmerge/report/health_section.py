"""The health report section: a :class:`~darwinmerge.health.Verdict` -> SectionInfo.

The chart of the seed's health check (the child's importance per layer against both
parents'), drawn as the child's bars with the parents' band as the interval, the three
profiles as lines, a probe x layer map of the signed flag strength, and the tables of
flags, probe losses, routing changes, prescription and thresholds.
"""

from __future__ import annotations

import numpy as np

from darwinmerge.health.summary import healthy_scope
from darwinmerge.health.verdict import Verdict
from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import (
    BarsInfo,
    Block,
    HeatmapInfo,
    LinesInfo,
    SectionInfo,
    TableInfo,
    TextInfo,
)

__all__ = ["health_section"]

CHART_TITLE = "Child vs parents: importance per layer"
#: The flag-strength map is drawn when some cell reaches this many margins (its colour
#: scale follows the data, so a map of near-zero values would look alarming).
STRENGTH_MAP_FROM = 0.5


def _mean(rows: list[list[float]]) -> np.ndarray:
    mean: np.ndarray = np.asarray(rows, dtype=float).mean(axis=0)
    return mean


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _localization_blocks(v: Verdict) -> list[Block]:
    """The swap-scan evidence: loss drop per layer and candidate, weight-space position."""
    loc = v.localization
    if loc is None:
        return [TextInfo("Localization was not run (--no-localize): no layer is named.")]
    base = float(np.mean(loc["loss"]))
    rec = {
        k: (base - np.asarray(val, dtype=float).mean(axis=0)) / base if base > 0 else None
        for k, val in loc["swapped"].items()
    }
    rows = []
    for layer in range(v.num_layers):
        pos = "; ".join(
            f"{c} t={_f(ts[layer], 2)} d={_f(loc['span_dist'][c][layer], 2)}"
            for c, ts in loc["span_t"].items()
            if np.isfinite(ts[layer]) or np.isfinite(loc["span_dist"][c][layer])
        )
        rank = loc["flagged"].index(layer) + 1 if layer in loc["flagged"] else None
        rows.append(
            (
                f"L{layer}",
                *(
                    "n/a" if rec[k] is None else f"{100 * rec[k][layer]:+.1f}%"  # type: ignore[index]
                    for k in ("span", "A", "B")
                ),
                pos,
                f"#{rank}" if rank else "",
            )
        )
    return [
        BarsInfo(
            "Probe loss drop with one layer replaced",
            tuple(f"L{i}" for i in range(v.num_layers)),
            {"best candidate": np.asarray(loc["recovery"], dtype=float) * 100},
            ylabel="% of the child's probe loss",
            caption=f"A layer is flagged when some candidate lowers the loss by more than "
            f"{100 * loc['margin']:.1f}% (docs/health.md, Calibration).",
        ),
        TableInfo(
            "Localization",
            ("layer", "span", "parent A", "parent B", "weights: t, distance from the span", "flag"),
            tuple(rows),
            caption="Loss drop (macro over categories) with the child's layer replaced by "
            "the parents' interpolation at the child's usual t (span), by parent A's or by "
            "parent B's. t: the layer's projection on the line A -> B (0 = A, 1 = B); d: its "
            "distance from that line / |B - A|.",
        ),
    ]


@SECTIONS.register("health")
def health_section(verdict: Verdict) -> SectionInfo:
    """Info for the health section (numbers straight from the verdict)."""
    v = verdict
    layers = tuple(f"L{i}" for i in range(v.num_layers))
    child, a, b = _mean(v.bi_child), _mean(v.bi_a), _mean(v.bi_b)
    flagged = sorted({f.layer for f in v.layer_flags})
    flagged_txt = ", ".join(f"L{i}" for i in flagged) or "none"
    blocks: list[Block] = [
        TextInfo(v.summary),
        BarsInfo(
            CHART_TITLE,
            layers,
            {"child": child},
            low={"child": np.minimum(a, b)},
            high={"child": np.maximum(a, b)},
            ylabel="BI (mean over probe categories)",
            caption=f"Bars: the child's block influence; whiskers: the band between parent A "
            f"({v.parent_a}) and parent B ({v.parent_b}). Flagged layers: {flagged_txt}.",
        ),
        LinesInfo(
            "Importance per layer: child, parent A, parent B",
            tuple(range(v.num_layers)),
            {"child": child, "parent A": a, "parent B": b},
            ylabel="BI (mean over probe categories)",
        ),
    ]
    strength = np.asarray(v.strength, dtype=float)
    peak = float(np.abs(strength).max()) if strength.size else 0.0
    if peak >= STRENGTH_MAP_FROM:
        blocks.append(
            HeatmapInfo(
                "Flag strength (probe x layer)",
                tuple(v.categories),
                tuple(str(i) for i in range(v.num_layers)),
                np.asarray(v.strength, dtype=float),
                colorbar="+ above / - below the parents' band, in margins",
                center=0.0,
                caption="Positive: the child's BI exceeds both parents' (interference side); "
                "negative: below both where a parent's layer is material (function-loss side); "
                "in units of the margin, so |value| > 1 is a flag.",
            )
        )
    else:
        blocks.append(
            TextInfo(
                f"Flag strength: every (probe, layer) cell is within {peak:.2f} margins of the "
                f"parents' band (a flag needs more than 1); no map drawn."
            )
        )
    blocks.extend(_localization_blocks(v))
    blocks.append(
        TableInfo(
            "Flagged layers" + (" (BI; information)" if v.localization is not None else ""),
            ("layer", "category", "flag", "child BI", "A BI", "B BI", "excess", "margin", "x"),
            tuple(
                (
                    f"L{f.layer}",
                    f.category,
                    f.kind.replace("_", " "),
                    _f(f.child),
                    _f(f.parent_a),
                    _f(f.parent_b),
                    _f(f.excess),
                    _f(f.threshold),
                    _f(f.severity, 2),
                )
                for f in v.layer_flags
            ),
            caption="x = excess / margin.",
        )
    )
    blocks.append(
        TableInfo(
            "Probe loss per category",
            ("category", "child", "parent A", "parent B", "child is"),
            tuple(
                (c.category, _f(c.child), _f(c.parent_a), _f(c.parent_b), c.status)
                for c in v.losses
            ),
            caption=f"'worse': above both parents by more than "
            f"{v.options['loss_rel']:.0%} of the higher one.",
        )
    )
    if v.routing_flags:
        blocks.append(
            TableInfo(
                "Routing changes",
                (
                    "layer",
                    "change",
                    "child",
                    "parent A",
                    "parent B",
                    "experts",
                    "alive in",
                    "loss evidence",
                ),
                tuple(
                    (
                        f"L{r.layer}",
                        r.kind.replace("_", " "),
                        _f(r.child),
                        _f(r.parent_a),
                        _f(r.parent_b),
                        ", ".join(str(e) for e in r.experts) or "-",
                        r.source or "-",
                        ("yes" if r.loss_evidence else "no")
                        if r.kind != "experts_revived"
                        else "-",
                    )
                    for r in v.routing_flags
                ),
                caption="Entropy rows: router entropy / log E; expert rows: dead fractions. "
                "A died expert or a collapsed router counts (and gets a prescription) only "
                "with loss evidence: a probe category worse than both parents, or its layer "
                "localized.",
            )
        )
    blocks.append(
        TableInfo(
            "Prescription",
            ("change", "reason"),
            tuple((c.describe(), c.reason) for c in v.prescription),
            caption="Parent A is the recipe's first parent (t = 0), B its second (t = 1).",
        )
    )
    blocks.append(TextInfo("What this check covers. " + " ".join(healthy_scope(v))))
    blocks.append(
        TableInfo(
            "Thresholds",
            ("option", "value"),
            tuple((k, f"{val:g}") for k, val in v.options.items()),
        )
    )
    return SectionInfo("health", "Child health check", tuple(blocks))
