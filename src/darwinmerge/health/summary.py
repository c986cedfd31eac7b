"""Plain-language summary of a :class:`Verdict` (what a person reads first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from darwinmerge.health.verdict import LayerFlag, Verdict

__all__ = ["summarise_verdict"]


def _layers(flags: list[LayerFlag]) -> str:
    by_layer: dict[int, list[str]] = {}
    for f in flags:
        by_layer.setdefault(f.layer, []).append(f.category)
    return "; ".join(f"L{layer} ({', '.join(cats)})" for layer, cats in sorted(by_layer.items()))


def summarise_verdict(v: Verdict) -> str:
    """A few sentences: the verdict, then each kind of problem with its layers, then what
    the prescription changes."""
    opt = v.options
    parts: list[str] = []
    inter = [f for f in v.layer_flags if f.kind == "interference"]
    lost = [f for f in v.layer_flags if f.kind == "function_loss"]
    died = [f for f in v.routing_flags if f.kind == "experts_died"]
    collapse = [f for f in v.routing_flags if f.kind == "entropy_collapse"]
    revived = [f for f in v.routing_flags if f.kind == "experts_revived"]
    worse = [c for c in v.losses if c.status == "worse"]
    better = [c for c in v.losses if c.status == "better"]
    if v.healthy:
        parts.append("Verdict: healthy - no issues detected.")
        parts.append(
            f"No layer where the child's importance exceeds both parents' by more than "
            f"max({opt['interference_rel']:g} x the higher parent, {opt['interference_abs']:g}) "
            f"(interference), and none where a parent's layer matters (BI >= "
            f"{opt['material']:g}) while the child's collapsed below the lower parent by more "
            f"than max({opt['function_loss_rel']:g} x it, {opt['function_loss_abs']:g}) "
            "(function loss)."
        )
    else:
        n = len({f.layer for f in v.layer_flags})
        parts.append(f"Verdict: needs attention - {n} flagged layer(s) of {v.num_layers}.")
    if inter:
        parts.append(
            "Interference (the child's layer transforms its input more than both parents', "
            f"a sign of conflicting weights): {_layers(inter)}."
        )
    if lost:
        parts.append(
            "Function loss (a parent's layer is important and the child's collapsed): "
            f"{_layers(lost)}."
        )
    if collapse:
        parts.append(
            "Router entropy collapsed in "
            + ", ".join(
                f"L{f.layer} ({f.child:.2f} vs {f.parent_a:.2f}/{f.parent_b:.2f})" for f in collapse
            )
            + "."
        )
    if died:
        n_died = sum(len(f.experts) for f in died)
        parts.append(
            f"{n_died} expert(s) died in the child but are alive in a parent: "
            + "; ".join(f"L{f.layer} {list(f.experts)} (alive in {f.source})" for f in died)
            + "."
        )
    if revived:
        parts.append(
            "Experts dead in both parents but alive in the child: "
            + "; ".join(f"L{f.layer} {list(f.experts)}" for f in revived)
            + "."
        )
    if worse:
        parts.append(
            "Probe loss worse than both parents on " + ", ".join(c.category for c in worse) + "."
        )
    if better:
        parts.append(
            "Probe loss better than both parents on " + ", ".join(c.category for c in better) + "."
        )
    if v.prescription:
        parts.append("Prescription: " + "; ".join(c.describe() for c in v.prescription) + ".")
    flagged = sorted({f.layer for f in v.layer_flags})
    if opt.get("upstream_first", False) and len(flagged) > 1:
        rest = ", ".join(f"L{i}" for i in flagged[1:])
        parts.append(
            f"Layers after L{flagged[0]} ({rest}) see the changed output of L{flagged[0]} and "
            "may be flagged for that alone: re-check after the repair."
        )
    return " ".join(parts)
