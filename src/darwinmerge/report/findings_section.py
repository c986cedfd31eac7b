"""The findings section: a run's results in plain words, computed from its phase outputs.

One paragraph per phase (what the MRI found, where the search started, what it chose and
why, the child's health, the final scores), each sentence built from the numbers the
later sections draw, plus one line per phase whose files are missing. "A" is the father
(the recipe's first parent, ``t = 0``), "B" the mother (``t = 1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from darwinmerge.health.verdict import Verdict
from darwinmerge.merge.recipe import Recipe
from darwinmerge.mri.compare import ComparisonScan
from darwinmerge.mri.scan import Scan
from darwinmerge.report.evolution_section import evolution_curve, trial_fitness
from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import SectionInfo, TextInfo
from darwinmerge.report.recipe_section import RevivedExpert, recipe_values, router_sources
from darwinmerge.report.results_section import OVERALL, paired_verdict

__all__ = [
    "findings_section",
    "final_finding",
    "health_finding",
    "mri_finding",
    "prior_finding",
    "search_finding",
    "start_finding",
]


def _f(x: Any, digits: int = 3) -> str:
    v = float("nan") if x is None else float(x)
    return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"


def _p(x: Any) -> str:
    v = float("nan") if x is None else float(x)
    return "n/a" if not np.isfinite(v) else f"{v:.2g}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _layers(ids: Sequence[int]) -> str:
    ids = list(ids)
    return ", ".join(f"L{i}" for i in ids[:6]) + (
        f" and {len(ids) - 6} more" if len(ids) > 6 else ""
    )


def _poss(name: str) -> str:
    return f"the {name}'s"


def _layer_preference(c: ComparisonScan) -> tuple[np.ndarray, str]:
    """[L] positive where A's layer is the better one (swap scan, else the BI proxy)."""
    swap = np.asarray(c.swap_advantage, dtype=float)
    if np.isfinite(swap).any():
        return np.nanmean(np.where(np.isfinite(swap), swap, np.nan), axis=0), "swap"
    return np.asarray(c.advantage, dtype=float).mean(axis=0), "bi"


def mri_finding(
    names: Mapping[str, str], comparison: ComparisonScan, scans: Mapping[str, Scan]
) -> str:
    """What the MRI found: the most decisive layer per category, how many layers favour
    each parent, each parent's dead experts and probe loss."""
    c = comparison
    a, b = "father", "mother"
    swap = np.asarray(c.swap_advantage, dtype=float)
    parts: list[str] = []
    if np.isfinite(swap).any():
        per_cat = []
        for i, cat in enumerate(c.categories):
            row = swap[i]
            if not np.isfinite(row).any():
                continue
            layer = int(np.nanargmax(np.abs(row)))
            v = float(row[layer])
            per_cat.append(f"{cat}: {_poss(a if v > 0 else b)} layer {layer} ({abs(v):.3f})")
        if per_cat:
            parts.append(
                "The swap scan's most decisive layer per probe category (whose layer is the "
                "better one; swap advantage in nats of probe loss): " + "; ".join(per_cat) + "."
            )
    pref, kind = _layer_preference(c)
    n_a = int((pref > 0).sum())
    basis = (
        "by the swap scan (mean over categories)"
        if kind == "swap"
        else "by block influence only (no swap scan: a cheap proxy)"
    )
    parts.append(
        f"Layer by layer {basis}, the father's layer is the better one at {n_a} of "
        f"{c.num_layers} layers and the mother's at {c.num_layers - n_a}."
    )
    for role in (a, b):
        s = scans.get(role)
        if s is None or not s.is_moe:
            continue
        dead = np.asarray(s.dead_fraction, dtype=float)
        bad = [s.sparse_layers[i] for i in np.argsort(-dead) if dead[i] > 0]
        if not bad:
            parts.append(
                f"The {role} has no dead experts (threshold {s.dead_threshold:g} x fair share)."
            )
            continue
        worst = int(np.argmax(dead))
        pron = "her" if role == b else "his"
        parts.append(
            f"The {role} has {_pct(float(dead.mean()))} dead experts on average over {pron} "
            f"{len(dead)} MoE layers (dead in {_layers(sorted(bad))}; worst "
            f"L{s.sparse_layers[worst]}: "
            f"{_pct(float(dead[worst]))} [{_pct(float(s.dead_interval[worst, 0]))}, "
            f"{_pct(float(s.dead_interval[worst, 1]))}])."
        )
    la, lb = float(np.nanmean(c.loss_a)), float(np.nanmean(c.loss_b))
    parts.append(f"Mean probe loss: father {_f(la)}, mother {_f(lb)} (lower is better).")
    return " ".join(parts)


def prior_finding(prior: Mapping[str, Any]) -> str:
    """Where the search started and why."""
    genes = prior.get("genes") or []
    if prior.get("kind") != "mri":
        return f"The search started blind: all {len(genes)} genes at 0.5 with step 1/6."
    moved = sorted(genes, key=lambda g: -abs(float(g["mean"]) - 0.5))[:3]
    target = prior.get("target")
    why = "; ".join(f"{g['name']} at {float(g['mean']):.2f}: {g.get('reason', '')}" for g in moved)
    decoded = prior.get("decoded") or {}
    names = {str(g["name"]) for g in genes}
    summary = "; ".join(f"{v}" for k, v in decoded.items() if k not in names and isinstance(v, str))
    return (
        "The search started from the MRI prior"
        + (f" toward {target}" if target else "")
        + (f" ({summary})" if summary else "")
        + f". The genes it moved most from the middle: {why}."
    )


def _component_summary(
    recipe: Recipe, num_layers: int, components: Sequence[str]
) -> tuple[str, np.ndarray | None]:
    if "t" not in recipe.parameters:
        return "", None
    vals = recipe_values(recipe, "t", num_layers, components)
    bits = []
    for comp, row in zip(components, vals, strict=True):
        if np.isfinite(row).any():
            lo, hi = float(np.nanmin(row)), float(np.nanmax(row))
            span = f"{lo:.2f}" if abs(hi - lo) < 5e-3 else f"{lo:.2f}-{hi:.2f}"
            bits.append(f"{comp} {span}")
    return "; ".join(bits), vals


def search_finding(
    evolution: Mapping[str, Any],
    recipe: Recipe | None,
    num_layers: int,
    *,
    components: Sequence[str],
    revived: Sequence[RevivedExpert] = (),
    comparison: ComparisonScan | None = None,
    repaired: bool = False,
    keep: str | None = None,
) -> str:
    """What the search chose and why (the fitness; and how the choice lines up with the
    MRI's layer preference, as a check)."""
    records = list(evolution.get("trials") or [])
    curve = evolution_curve(records)
    done = int(curve.where("complete").sum())
    pruned = int(curve.where("pruned").sum())
    failed = int(curve.where("fail").sum())
    winner = evolution.get("winner") or {}
    wnum = winner.get("trial")
    wfit = (winner.get("values") or [None])[0]
    best = float(np.nanmax(curve.best)) if np.isfinite(curve.best).any() else float("nan")
    parts = [
        f"The search ({evolution.get('optimizer', '?')}) tried {len(records)} candidates "
        f"({done} complete, {pruned} stopped early, {failed} failed) and chose trial {wnum}, "
        f"fitness {_f(wfit, 4)} on the fitness split"
    ]
    if wfit is not None and np.isfinite(best) and abs(float(wfit) - best) <= 1e-12 * max(1, best):
        parts[-1] += ": the highest fitness of all complete candidates."
    else:
        rule = (
            f"the winner rule keeps the father's {keep} score within its tolerance"
            if keep
            else "the winner rule chose another candidate"
        )
        parts[-1] += f" (the best complete fitness was {_f(best, 4)}; {rule})."
    first = next((trial_fitness(r) for r in records if r["state"] == "complete"), None)
    if first is not None and np.isfinite(first) and wfit is not None:
        parts.append(f"The first complete candidate scored {_f(first, 4)}.")
    if recipe is not None:
        what = "repaired recipe" if repaired else "winner's recipe"
        comp_txt, vals = _component_summary(recipe, num_layers, components)
        if comp_txt:
            parts.append(f"The {what} gives the mother's share t per component: {comp_txt}.")
        routers = router_sources(recipe, num_layers)
        spans: list[str] = []
        start = 0
        for i in range(1, num_layers + 1):
            if i == num_layers or routers[i] != routers[start]:
                span = f"L{start}" if start == i - 1 else f"L{start}-{i - 1}"
                spans.append(f"{span} {routers[start]}")
                start = i
        parts.append("Router: " + ", ".join(spans) + ".")
        if revived:
            layers = sorted({r.layer for r in revived})
            sources = sorted({r.source for r in revived})
            parts.append(
                f"It revives {len(revived)} experts in {_layers(layers)} from "
                f"{' and '.join(sources)}."
            )
        else:
            parts.append("No expert is revived.")
        if comparison is not None and vals is not None:
            pref, _ = _layer_preference(comparison)
            lean = np.nanmean(vals, axis=0) - 0.5  # > 0: toward the mother
            ok = [
                i
                for i in range(min(num_layers, len(pref)))
                if np.isfinite(lean[i]) and pref[i] * lean[i] < 0
            ]
            parts.append(
                f"Why: the search keeps what scores best on the fitness split; as a check, at "
                f"{len(ok)} of {num_layers} layers the recipe leans toward the parent the MRI "
                "found better."
            )
    sel = evolution.get("selection")
    if sel:
        w = next((c for c in sel.get("candidates") or [] if c["trial"] == sel.get("winner")), None)
        if w is not None:
            o = (w.get("test") or {}).get(OVERALL, {})
            parts.append(
                f"On the test split the winner scored {_f(o.get('score'))} [{_f(o.get('ci_low'))}, "
                f"{_f(o.get('ci_high'))}] (fitness - test = {_f(sel.get('selection_gap'))})."
            )
    return " ".join(parts)


def health_finding(verdict: Verdict, repair: Mapping[str, Any] | None = None) -> str:
    """The child's health in words."""
    v = verdict
    if v.healthy:
        text = (
            "The health check found the child healthy: no layer outside its parents' band, "
            "no expert died with a probe loss to show for it, no probe loss worse than both "
            "parents."
        )
    else:
        bits = []
        for layer in sorted({f.layer for f in v.layer_flags}):
            fl = v.flags_at(layer)
            bits.append(
                f"L{layer} "
                + ", ".join(
                    f"{f.kind.replace('_', ' ')} in {f.category} (x{f.severity:.1f})" for f in fl
                )
            )
        for r in v.routing_flags:
            if r.problem:
                bits.append(f"L{r.layer} {r.kind.replace('_', ' ')}")
        worse = [c.category for c in v.losses if c.status == "worse"]
        if worse:
            bits.append(f"probe loss worse than both parents in {', '.join(worse)}")
        text = "The health check raised flags: " + "; ".join(bits) + "."
    if v.prescription:
        text += f" Prescription: {'; '.join(c.describe() for c in v.prescription)}."
    if repair is not None:
        kept = repair.get("kept") or []
        text += (
            f" Repair kept ({', '.join(kept)}): fitness {_f(repair.get('baseline'), 4)} -> "
            f"{_f(repair.get('score'), 4)}."
            if kept
            else " Repair tried the prescription and kept nothing (the fitness split dropped)."
        )
    return text


def final_finding(scores: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """The final scores and the paired tests in one sentence."""
    names = dict(names or {})
    child, fa, mo = (scores[m][OVERALL] for m in ("child", "father", "mother"))

    def cell(s: Mapping[str, Any]) -> str:
        return f"{_f(s.get('score'))} [{_f(s.get('ci_low'))}, {_f(s.get('ci_high'))}]"

    def who(m: str) -> str:
        return f"{m} ({names[m]})" if names.get(m, m) != m else m

    text = (
        f"On the test split ({child.get('n', '?')} items) the child scores {cell(child)} vs "
        f"{who('father')} {cell(fa)} and {who('mother')} {cell(mo)} (overall, 95% intervals)."
    )
    paired = scores.get("paired") or {}
    bits = []
    for p in ("father", "mother"):
        row = (paired.get(f"child_vs_{p}") or {}).get(OVERALL)
        if row:
            bits.append(
                f"child - {p} {float(row['diff']):+.3f} (paired p={_p(row.get('p_value'))}: "
                f"{paired_verdict(row, p)})"
            )
    if bits:
        text += " " + "; ".join(bits) + "."
    start = start_finding(scores)
    if start is not None:
        text += " Against its own start: " + start
    return text


def start_finding(scores: Mapping[str, Any]) -> str | None:
    """The child against the search's own start on the test split, in words (None when
    the start was not scored): whether the search added anything beyond noise."""
    row = (scores.get("paired") or {}).get("child_vs_start", {}).get(OVERALL)
    if not row:
        return None
    p = row["p_value"]
    head = (
        f"child - its start (the prior's recipe, no search) {float(row['diff']):+.3f}, "
        f"{row['a_only']} items only the child got right, {row['b_only']} only the start, "
        f"exact paired p = {_p(p)}"
    )
    if p == p and p < 0.05 and row["diff"] > 0:
        return f"{head}: the search improved on its start."
    if p == p and p < 0.05 and row["diff"] < 0:
        return f"{head}: the search's winner is WORSE than its start on held-out items."
    return f"{head}: the search added nothing beyond noise on held-out items."


@SECTIONS.register("findings")
def findings_section(
    *,
    mri: str | None = None,
    prior: str | None = None,
    search: str | None = None,
    health: str | None = None,
    final: str | None = None,
    missing: Sequence[str] = (),
) -> SectionInfo:
    """The findings paragraphs in pipeline order (``None`` = phase not in the run)."""
    blocks = [
        TextInfo(f"{label}: {text}")
        for label, text in (
            ("MRI", mri),
            ("Prior", prior),
            ("Search", search),
            ("Health", health),
            ("Final scores", final),
        )
        if text
    ]
    blocks += [TextInfo(f"Not in this report: {m}") for m in missing]
    return SectionInfo("findings", "Findings", tuple(blocks))
