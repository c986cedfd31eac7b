"""Plain-language summary of a :class:`Verdict` (what a person reads first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from darwinmerge.health.verdict import every_layer_deviates

if TYPE_CHECKING:
    from darwinmerge.health.verdict import LayerFlag, RoutingFlag, Verdict

__all__ = ["healthy_scope", "summarise_verdict"]


def _layers(flags: list[LayerFlag]) -> str:
    by_layer: dict[int, list[str]] = {}
    for f in flags:
        by_layer.setdefault(f.layer, []).append(f.category)
    return "; ".join(f"L{layer} ({', '.join(cats)})" for layer, cats in sorted(by_layer.items()))


def _routing_words(f: RoutingFlag) -> str:
    if f.kind == "entropy_collapse":
        return f"L{f.layer} router entropy {f.child:.2f} vs {f.parent_a:.2f}/{f.parent_b:.2f}"
    return f"L{f.layer} expert(s) {list(f.experts)} died (alive in {f.source})"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _localization(v: Verdict) -> list[str]:
    """Sentences on the swap-scan localization (empty when it was not run)."""
    loc = v.localization
    if loc is None:
        return []
    rec = loc["recovery"]
    flagged = loc["flagged"]
    margin = loc["margin"]
    words = {"span": "put back into the parents' span", "A": "from parent A", "B": "from parent B"}
    if flagged:
        ranked = "; ".join(
            f"L{layer} ({words[loc['best'][layer]]}: probe loss {_pct(rec[layer])} lower)"
            for layer in flagged
        )
        return [f"Damaged layer(s), most likely first: {ranked}."]
    worst = max(range(len(rec)), key=lambda i: rec[i]) if rec else 0
    text = (
        f"No single layer explains a problem: replacing any one of the {v.num_layers} layers "
        f"by parent A's, parent B's or the parents' span lowers the probe loss by at most "
        f"{_pct(max(rec) if rec else 0.0)} (L{worst}; a layer is flagged above {_pct(margin)})."
    )
    if not any(c.status == "worse" for c in v.losses):
        return [text]
    text += (
        " The probe loss is still worse than both parents': the damage is spread over "
        "layers, outside them (embeddings, final norm, output head), or in a layer whose "
        "fix shows little on the probes."
    )
    dev = loc.get("deviating") or []
    suspects = [i for i, comps in enumerate(dev) if comps]
    if every_layer_deviates(dev):
        text += (
            " Every layer deviates from the parents' weights (a sparsifying merge such as "
            "trimmed_lerp with density < 1 does this), so the weights name no suspect; the "
            f"largest revert effect is at L{worst}. Try"
        )
    elif suspects:
        text += (
            " Suspects by weights alone (they deviate from the child's usual t): "
            + "; ".join(f"L{i} ({', '.join(dev[i])})" for i in suspects)
            + "; try their t set back to the usual one first (SetLayerT), then"
        )
    else:
        text += " Try"
    text += (
        " the whole recipe's t moved toward the better parent, a lower density for "
        "sparsifying methods, or another search."
    )
    return [text]


def healthy_scope(v: Verdict) -> list[str]:
    """What the check looked at and what a healthy verdict does not rule out."""
    probes = (
        f"{v.probe_sequences} probe sequences ({v.probe_targets} scored tokens) in "
        f"{len(v.categories)} categories ({', '.join(v.categories)})"
    )
    checked = [
        f"Checked on {probes}: the probe loss per category against both parents",
        "block influence per layer and category against the parents' band",
    ]
    if v.sparse_layers:
        checked.append("router entropy and dead / revived experts per sparse layer")
    if v.localization is not None:
        checked.append(
            f"and, for each of the {v.num_layers} layers, the probe loss with that layer "
            "replaced by parent A's, parent B's and the parents' span (three swap scans), "
            "with the layer's weight-space position against the parents"
        )
    return [
        ", ".join(checked) + ".",
        "A healthy verdict does not rule out: a loss on tasks or skills the probes do not "
        "cover; damage spread thinly over many layers (each below the margin) or outside "
        "the decoder layers (embeddings, final norm, output head); a child that is worse "
        "than a better recipe would be while still between its parents; effects of "
        "generation (sampling, long outputs) that a next-token loss on short probes does "
        "not see. Score the child on held-out tasks to know.",
    ]


def summarise_verdict(v: Verdict) -> str:
    """A few sentences: the verdict, then each kind of problem with its layers, then what
    the prescription changes."""
    opt = v.options
    parts: list[str] = []
    inter = [f for f in v.layer_flags if f.kind == "interference"]
    lost = [f for f in v.layer_flags if f.kind == "function_loss"]
    died = [f for f in v.routing_flags if f.kind == "experts_died" and f.loss_evidence]
    collapse = [f for f in v.routing_flags if f.kind == "entropy_collapse" and f.loss_evidence]
    unbacked = [f for f in v.routing_flags if f.kind != "experts_revived" and not f.loss_evidence]
    revived = [f for f in v.routing_flags if f.kind == "experts_revived"]
    worse = [c for c in v.losses if c.status == "worse"]
    better = [c for c in v.losses if c.status == "better"]
    localized = v.localization is not None
    if v.healthy:
        parts.append("Verdict: healthy - no issues detected.")
        parts.extend(_localization(v))
        if localized:
            parts.extend(healthy_scope(v))
    elif localized:
        n = len(v.localized)
        parts.append(f"Verdict: needs attention - {n} localized layer(s) of {v.num_layers}.")
        parts.extend(_localization(v))
    else:
        n = len({f.layer for f in v.layer_flags})
        parts.append(f"Verdict: needs attention - {n} flagged layer(s) of {v.num_layers}.")
    if v.healthy and not localized:
        parts.append(
            f"No layer where the child's importance exceeds both parents' by more than "
            f"max({opt['interference_rel']:g} x the higher parent, {opt['interference_abs']:g}) "
            f"(interference), and none where a parent's layer matters (BI >= "
            f"{opt['material']:g}) while the child's collapsed below the lower parent by more "
            f"than max({opt['function_loss_rel']:g} x it, {opt['function_loss_abs']:g}) "
            "(function loss)."
        )
    info = " (information: the localization decides)" if localized else ""
    if inter:
        parts.append(
            "Interference (the child's layer transforms its input more than both parents', "
            f"a sign of conflicting weights){info}: {_layers(inter)}."
        )
    if lost:
        parts.append(
            "Function loss (a parent's layer is important and the child's collapsed)"
            f"{info}: {_layers(lost)}."
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
    if unbacked:
        parts.append(
            "Routing changes without loss evidence (information, nothing prescribed): "
            + "; ".join(_routing_words(f) for f in unbacked)
            + ". No probe category's loss is worse than both parents' and no such layer is "
            "localized, so an expert the child no longer uses costs nothing measurable here."
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
    if not localized and opt.get("upstream_first", False) and len(flagged) > 1:
        rest = ", ".join(f"L{i}" for i in flagged[1:])
        parts.append(
            f"Layers after L{flagged[0]} ({rest}) see the changed output of L{flagged[0]} and "
            "may be flagged for that alone: re-check after the repair."
        )
    return " ".join(parts)
