"""Child-vs-parents health check on three MRI scans -> :class:`Verdict`.

The scans must be made on the same probes (same categories, sequences and token
counts) and the same shapes (layers, sparse layers, experts); anything else is refused
in one line by :func:`check_comparable`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np

from darwinmerge.errors import ArchitectureMismatchError, ConfigError
from darwinmerge.health.changes import (
    MoveLayerT,
    RecipeChange,
    Revive,
    ScaleDensity,
    SetLayerT,
    SetRouter,
    Side,
)
from darwinmerge.health.localize import Localization, LocalizeOptions
from darwinmerge.health.options import HealthOptions
from darwinmerge.health.summary import summarise_verdict
from darwinmerge.health.verdict import CategoryLoss, LayerFlag, RoutingFlag, Verdict
from darwinmerge.mri.scan import Scan

__all__ = [
    "check_comparable",
    "flag_strength",
    "with_loss_evidence",
    "health_check",
    "layer_flags",
    "prescribe",
    "prescribe_localized",
]

_LABELS = ("child", "parent A", "parent B")


def check_comparable(child: Scan, parent_a: Scan, parent_b: Scan) -> None:
    """Refuse scans made on different probes, shapes or loss definitions (one line)."""
    scans = (child, parent_a, parent_b)
    ref = parent_a
    for label, s in zip(_LABELS, scans, strict=True):
        if s is ref:
            continue
        shape = [
            (n, getattr(s, n), getattr(ref, n))
            for n in ("num_layers", "sparse_layers", "num_experts", "top_k")
            if getattr(s, n) != getattr(ref, n)
        ]
        if shape:
            n, got, want = shape[0]
            raise ArchitectureMismatchError(
                f"health: the {label} scan ({s.model}) has {n}={got} but parent A's "
                f"({ref.model}) has {want}; scan models of the same architecture"
            )
        if s.categories != ref.categories:
            raise ConfigError(
                f"health: the {label} scan ({s.model}) was made on probe categories "
                f"{s.categories}, parent A's on {ref.categories}; rescan on the same probes"
            )
        same = (
            s.seq_category.shape == ref.seq_category.shape
            and np.array_equal(s.seq_category, ref.seq_category)
            and np.array_equal(s.nll_count, ref.nll_count)
        )
        if not same:
            raise ConfigError(
                f"health: the {label} scan ({s.model}) was made on other probe sequences than "
                f"parent A's ({ref.model}) (sequence count or token counts differ); rescan "
                "with the same --probes, tokenizer and --max-length"
            )
        for attr in ("loss_tokens", "dead_threshold"):
            a, b = getattr(s, attr, None), getattr(ref, attr, None)
            if a != b:
                raise ConfigError(
                    f"health: the {label} scan ({s.model}) has {attr}={a!r} but parent A's has "
                    f"{b!r}; rescan with the same settings"
                )


def flag_strength(
    bi_c: np.ndarray, bi_a: np.ndarray, bi_b: np.ndarray, opt: HealthOptions
) -> np.ndarray:
    """[C, L] signed flag strength: ``+excess / margin`` above the parents' band (the
    interference side), ``-deficit / margin`` below it where a parent's layer is material
    (the function-loss side), 0 inside the band. ``|strength| > 1`` is exactly a flag."""
    hi = np.maximum(bi_a, bi_b)
    lo = np.minimum(bi_a, bi_b)
    up_thr = np.maximum(opt.interference_rel * hi, opt.interference_abs)
    down_thr = np.maximum(opt.function_loss_rel * lo, opt.function_loss_abs)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(bi_c > hi, (bi_c - hi) / up_thr, 0.0)
        down = np.where((bi_c < lo) & (hi >= opt.material), (lo - bi_c) / down_thr, 0.0)
    return np.where(up > 0, up, -down)


def layer_flags(
    bi_c: np.ndarray, bi_a: np.ndarray, bi_b: np.ndarray, categories: list[str], opt: HealthOptions
) -> list[LayerFlag]:
    """Interference and function-loss flags over [C, L] block-influence arrays."""
    hi = np.maximum(bi_a, bi_b)
    lo = np.minimum(bi_a, bi_b)
    out: list[LayerFlag] = []
    C, L = bi_c.shape
    for c in range(C):
        for layer in range(L):
            args = (float(bi_c[c, layer]), float(bi_a[c, layer]), float(bi_b[c, layer]))
            excess = float(bi_c[c, layer] - hi[c, layer])
            thr = max(opt.interference_rel * float(hi[c, layer]), opt.interference_abs)
            if excess > thr:
                sev = excess / thr if thr > 0 else float("inf")
                out.append(LayerFlag(layer, categories[c], "interference", *args, excess, thr, sev))
                continue
            deficit = float(lo[c, layer] - bi_c[c, layer])
            thr = max(opt.function_loss_rel * float(lo[c, layer]), opt.function_loss_abs)
            if hi[c, layer] >= opt.material and deficit > thr:
                sev = deficit / thr if thr > 0 else float("inf")
                out.append(
                    LayerFlag(layer, categories[c], "function_loss", *args, deficit, thr, sev)
                )
    return out


def _routing_flags(child: Scan, a: Scan, b: Scan, opt: HealthOptions) -> list[RoutingFlag]:
    out: list[RoutingFlag] = []
    dead = child.dead_threshold
    for s, layer in enumerate(child.sparse_layers):
        hc, ha, hb = (float(x.router_entropy[s]) for x in (child, a, b))
        if np.isfinite(hc) and hc < min(ha, hb) - opt.entropy_margin:
            out.append(RoutingFlag(layer, "entropy_collapse", hc, ha, hb, opt.entropy_margin))
        uc, ua, ub = child.utilisation[s], a.utilisation[s], b.utilisation[s]
        died = (uc < dead) & (np.maximum(ua, ub) >= dead)
        frac = (float(child.dead_fraction[s]), float(a.dead_fraction[s]), float(b.dead_fraction[s]))
        for side in ("A", "B"):
            mine = died & ((ua >= ub) if side == "A" else (ub > ua))
            if mine.any():
                experts = tuple(int(e) for e in np.flatnonzero(mine))
                out.append(RoutingFlag(layer, "experts_died", *frac, dead, experts, side))
        revived = (uc >= dead) & (ua < dead) & (ub < dead)
        if revived.any():
            experts = tuple(int(e) for e in np.flatnonzero(revived))
            out.append(RoutingFlag(layer, "experts_revived", *frac, dead, experts))
    return out


def with_loss_evidence(
    routing: list[RoutingFlag], losses: list[CategoryLoss], localized: Collection[int]
) -> list[RoutingFlag]:
    """The routing flags with :attr:`RoutingFlag.loss_evidence` set: true when some probe
    category's loss is ``worse`` than both parents' or the flag's layer is in
    ``localized`` (the swap scans' flagged layers: putting the layer back lowers the
    probe loss by the calibrated margins). An expert the child no longer routes to, or a
    sharper router, is not a loss by itself: on the merge-problem suite the search's
    children that beat their reference had died experts (``docs/health.md``)."""
    worse = any(c.status == "worse" for c in losses)
    return [dataclasses.replace(r, loss_evidence=worse or r.layer in localized) for r in routing]


def _losses(child: Scan, a: Scan, b: Scan, opt: HealthOptions) -> list[CategoryLoss]:
    out = []
    for c, cat in enumerate(child.categories):
        lc, la, lb = float(child.loss[c]), float(a.loss[c]), float(b.loss[c])
        if lc > max(la, lb) * (1.0 + opt.loss_rel):
            status = "worse"
        elif lc < min(la, lb):
            status = "better"
        else:
            status = "between"
        out.append(CategoryLoss(cat, lc, la, lb, status))  # type: ignore[arg-type]
    return out


def prescribe(
    flags: list[LayerFlag],
    routing: list[RoutingFlag],
    bi_c: np.ndarray,
    bi_a: np.ndarray,
    bi_b: np.ndarray,
    categories: list[str],
    opt: HealthOptions,
) -> list[RecipeChange]:
    """The recipe changes for the flags (rules in ``docs/health.md``)."""
    changes: list[RecipeChange] = []
    layers = sorted({f.layer for f in flags})
    if opt.upstream_first:
        layers = layers[:1]
    for layer in layers:
        here = [f for f in flags if f.layer == layer]
        lost = [f for f in here if f.kind == "function_loss"]
        if lost:
            # the parent whose profile the child lost: larger BI summed over those categories
            idx = [categories.index(f.category) for f in lost]
            side: Side = "A" if bi_a[idx, layer].sum() >= bi_b[idx, layer].sum() else "B"
            cats = ", ".join(f.category for f in lost)
            changes.append(
                MoveLayerT(
                    layer,
                    side,
                    opt.move_step,
                    f"function loss on {cats}: parent {side}'s layer "
                    "is important there and the child's collapsed",
                )
            )
            continue
        idx = [categories.index(f.category) for f in here]
        da = float(np.abs(bi_c[idx, layer] - bi_a[idx, layer]).sum())
        db = float(np.abs(bi_c[idx, layer] - bi_b[idx, layer]).sum())
        closer: Side = "A" if da <= db else "B"
        cats = ", ".join(f.category for f in here)
        changes.append(
            ScaleDensity(
                layer,
                opt.density_factor,
                closer,
                opt.move_step,
                f"interference on {cats}: the child's layer transforms more than both parents'",
            )
        )
    for r in routing:
        if not r.loss_evidence:  # information only (with_loss_evidence)
            continue
        if r.kind == "experts_died" and r.source in ("A", "B"):
            changes.append(
                Revive(
                    r.layer,
                    r.experts,
                    r.source,  # type: ignore[arg-type]
                    f"experts died in the child but are alive in parent {r.source}",
                )
            )
        elif r.kind == "entropy_collapse":
            side = "A" if r.parent_a >= r.parent_b else "B"
            changes.append(
                SetRouter(
                    r.layer,
                    side,  # type: ignore[arg-type]
                    f"router entropy collapsed ({r.child:.3f} vs {r.parent_a:.3f} / "
                    f"{r.parent_b:.3f})",
                )
            )
    return changes


def prescribe_localized(loc: Localization, max_layers: int = 1) -> list[RecipeChange]:
    """One change per localized layer (the ``max_layers`` largest recoveries): the
    candidate that recovered the most, as a recipe change. ``span``: :class:`SetLayerT`
    with the child's usual t (clipped to [0, 1]) for the components that deviate from it
    (``Localization.deviating``; every component when none does); ``A`` / ``B``: the
    whole layer moved to that parent (:class:`MoveLayerT`, step 1)."""
    out: list[RecipeChange] = []
    for layer in loc.flagged[:max_layers]:
        gain = loc.recovery[layer]
        best = loc.best[layer]
        why = f"probe loss {gain:.1%} lower with this layer"
        if best == "span":
            # t_ref NaN: the parents are equal there, any t gives their weights (0 is used)
            ref = {c: (t if np.isfinite(t) else 0.0) for c, t in loc.t_ref.items()}
            dev = loc.deviating[layer] if loc.deviating else []
            comps = dev or [c for c, t in loc.t_ref.items() if np.isfinite(t)]
            values = tuple((c, float(min(max(ref[c], 0.0), 1.0))) for c in comps)
            out.append(
                SetLayerT(
                    layer,
                    values,
                    f"{why} put back into the parents' span at the child's usual t "
                    f"({', '.join(comps)} deviate{'s' if len(comps) == 1 else ''})",
                )
            )
        else:
            side: Side = "A" if best == "A" else "B"
            out.append(MoveLayerT(layer, side, 1.0, f"{why} taken from parent {side}"))
    return out


def health_check(
    child: Scan,
    parent_a: Scan,
    parent_b: Scan,
    options: HealthOptions | None = None,
    *,
    localization: Localization | None = None,
    localize_options: LocalizeOptions | None = None,
) -> Verdict:
    """Compare the child's scan with both parents' layer by layer (see ``docs/health.md``).
    ``parent_a`` is the recipe's first parent (t = 0), ``parent_b`` its second (t = 1).
    With ``localization`` (:func:`darwinmerge.health.localize.localize`) its flagged
    layers decide the layer part of the verdict and of the prescription; the BI flags
    are then reported as information only. A routing flag (died experts, entropy
    collapse) counts only with loss evidence (:func:`with_loss_evidence`)."""
    opt = options or HealthOptions()
    check_comparable(child, parent_a, parent_b)
    cats = list(child.categories)
    flags = layer_flags(child.bi, parent_a.bi, parent_b.bi, cats, opt)
    routing = _routing_flags(child, parent_a, parent_b, opt) if child.is_moe else []
    losses = _losses(child, parent_a, parent_b, opt)
    localized = [] if localization is None else localization.flagged
    routing = with_loss_evidence(routing, losses, localized)
    if localization is not None:
        lopt = localize_options or LocalizeOptions(margin=localization.margin)
        layer_changes = prescribe_localized(localization, lopt.max_layers)
        prescription = layer_changes + prescribe(
            [], routing, child.bi, parent_a.bi, parent_b.bi, cats, opt
        )
    else:
        prescription = prescribe(flags, routing, child.bi, parent_a.bi, parent_b.bi, cats, opt)
    verdict = Verdict(
        child=child.model,
        parent_a=parent_a.model,
        parent_b=parent_b.model,
        categories=cats,
        num_layers=child.num_layers,
        sparse_layers=list(child.sparse_layers),
        options=opt.model_dump(),
        bi_child=child.bi.tolist(),
        bi_a=parent_a.bi.tolist(),
        bi_b=parent_b.bi.tolist(),
        strength=flag_strength(child.bi, parent_a.bi, parent_b.bi, opt).tolist(),
        layer_flags=flags,
        routing_flags=routing,
        losses=losses,
        prescription=prescription,
        localization=None if localization is None else localization.to_dict(),
        probe_sequences=len(child.seq_category),
        probe_targets=int(np.asarray(child.nll_count).sum()),
    )
    verdict.summary = summarise_verdict(verdict)
    return verdict
