"""Localization: which decoder layer of the child carries the damage, and what to put there.

For every decoder layer ``l`` the child's probe loss (the scans' loss targets, answer
tokens by default) is measured with layer ``l`` replaced by one *candidate* layer, with
the MRI's swap scan (:func:`darwinmerge.mri.compare.swap_scan`: the forward pass restarts
at layer ``l`` from the child's recorded inputs; the child is restored after each swap):

* ``A`` / ``B``: the layer of parent A / B;
* ``span``: the parents' interpolation at the child's *typical* share of B,
  ``A_l + t_ref[c] (B_l - A_l)`` per component ``c``, with ``t_ref[c]`` the median over
  layers of the child's weight-space projection ``t_l[c]`` (below). A child merged with
  one ``t`` per component everywhere but at a damaged layer gets that layer back.

Weight space, per layer x component (every tensor of the component concatenated), with
``d = B - A`` and ``w = W_child - A``: the projection ``t = <w, d> / <d, d>`` (the share
of B; outside [0, 1] the layer extrapolates past a parent) and the distance from the line
through the parents ``dist = |w - t d| / |d|`` (0 for any linear mix of the parents).

The **recovery** of a candidate at layer ``l`` is the relative drop of the child's macro
probe loss (mean over categories): ``(loss - loss_swapped) / loss``. A layer
**deviates** when some component's t differs from ``t_ref`` by more than
:attr:`LocalizeOptions.deviation` or leaves the parents' line by more than that share of
``|B - A|`` beyond its usual distance (the median over layers). A layer is flagged
(:func:`flag_layers`) when

* it deviates in a way no mix of the parents does (t outside [0, 1], or off the
  parents' line more than usual) and putting it back into the span recovers more than
  :attr:`LocalizeOptions.deviation_margin` (ranked first, by that recovery), or
* its best recovery exceeds :attr:`LocalizeOptions.margin` (ranked after, by it).

When every layer deviates, the deviation is no evidence about any layer: only the
second route is left, its layers ranked by their best recovery (the measured revert
effect).

The margins are calibrated on the damage ``benchmarks/health_validation.py`` builds
(``docs/health.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from darwinmerge.health.options import LocalizeOptions
from darwinmerge.health.verdict import every_layer_deviates
from darwinmerge.mri.compare import SWAP_BUDGET_BYTES, swap_scan
from darwinmerge.mri.probes import ProbeBatches

__all__ = [
    "CANDIDATES",
    "LocalizeOptions",
    "Localization",
    "deviating_components",
    "every_layer_deviates",
    "flag_layers",
    "leaving_span_components",
    "layer_components",
    "localize",
    "span_projection",
    "typical_t",
]

#: Candidate layers tried at every layer, in this order.
CANDIDATES = ("span", "A", "B")


@dataclass
class Localization:
    """Per-layer evidence of the swap scans and the weight space (JSON values)."""

    categories: list[str]
    num_layers: int
    loss_tokens: str
    loss: list[float]  # [C] the child's probe loss
    swapped: dict[str, list[list[float]]]  # candidate -> [C][L] loss with layer l replaced
    span_t: dict[str, list[float]]  # component -> [L] projection t (NaN: parents equal)
    span_dist: dict[str, list[float]]  # component -> [L] distance from the parents' line
    t_ref: dict[str, float]  # component -> median t over layers (the span candidate's t)
    recovery: list[float]  # [L] best relative loss drop of any candidate
    best: list[str]  # [L] the candidate that gives it
    flagged: list[int]  # flag_layers: largest recovery first
    margin: float
    deviating: list[list[str]] = field(default_factory=list)  # [L] deviating components
    #: [L] the deviating components no mix of the parents makes (leaving_span_components)
    leaving: list[list[str]] = field(default_factory=list)
    deviation_margin: float = 0.0
    notes: list[str] = field(default_factory=list)

    def recovery_of(self, candidate: str) -> np.ndarray:
        """[L] relative macro-loss drop with each layer replaced by ``candidate``."""
        base = float(np.mean(self.loss))
        sw = np.asarray(self.swapped[candidate], dtype=float).mean(axis=0)
        return np.asarray((base - sw) / base if base > 0 else np.zeros_like(sw))

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Localization:
        return cls(**data)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN -> None is left to json (it writes NaN); numpy scalars -> float."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.floating | np.integer):
        return value.item()
    return value


def layer_components(model: nn.Module, layout_layers: Sequence[nn.Module]) -> list[dict[str, str]]:
    """Per decoder layer: the layer's own tensor name -> its component (``attn``,
    ``linear_attn``, ``norm``, ``router``, ``experts``, ...) from the architecture table."""
    from darwinmerge.arch import detect_architecture

    full = model.state_dict()
    config = model.config.to_dict()  # type: ignore[union-attr, operator]
    arch = detect_architecture(config, list(full.keys()))
    prefixes = {id(m): n for n, m in model.named_modules()}
    out = []
    for layer in layout_layers:
        prefix = prefixes[id(layer)] + "."
        comps = {}
        for name in layer.state_dict():
            comps[name] = arch.role(prefix + name).component
        out.append(comps)
    return out


def span_projection(
    child: dict[str, torch.Tensor],
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    components: dict[str, str],
) -> tuple[dict[str, float], dict[str, float]]:
    """Per component of one layer: (projection t, distance from the parents' line
    relative to ``|B - A|``). Parents equal on a component: t NaN, distance
    ``|W - A| / max(|A|, tiny)``."""
    acc: dict[str, list[float]] = {}
    for name, comp in components.items():
        w = child[name].detach().double().flatten()
        pa = a[name].detach().double().flatten()
        d = b[name].detach().double().flatten() - pa
        w = w - pa
        s = acc.setdefault(comp, [0.0, 0.0, 0.0, 0.0])  # <w,d>, <d,d>, <w,w>, <A,A>
        s[0] += float(w @ d)
        s[1] += float(d @ d)
        s[2] += float(w @ w)
        s[3] += float(pa @ pa)
    ts, dists = {}, {}
    for comp, (wd, dd, ww, aa) in acc.items():
        if dd <= 1e-24 * max(aa, 1e-30):
            ts[comp] = float("nan")
            dists[comp] = float(np.sqrt(ww / max(aa, 1e-30)))
            continue
        t = wd / dd
        resid = max(ww - 2 * t * wd + t * t * dd, 0.0)
        ts[comp] = float(t)
        dists[comp] = float(np.sqrt(resid / dd))
    return ts, dists


def _span_model(
    child: nn.Module,
    layers_a: Sequence[nn.Module],
    layers_b: Sequence[nn.Module],
    comps: list[dict[str, str]],
    t_ref: dict[str, float],
) -> tuple[nn.Module, Sequence[nn.Module]]:
    """A copy of the child whose every decoder layer is ``A + t_ref[c] (B - A)``."""
    from darwinmerge.checkpoint.model_writer import write_into_model
    from darwinmerge.mri.layout import resolve_layout

    model = copy.deepcopy(child)
    layers = resolve_layout(model).layers
    for i, layer in enumerate(layers):
        sa, sb = layers_a[i].state_dict(), layers_b[i].state_dict()
        new = {}
        for name, comp in comps[i].items():
            t = t_ref.get(comp, float("nan"))
            t = 0.0 if not np.isfinite(t) else t
            new[name] = sa[name] + t * (sb[name] - sa[name])
        write_into_model(layer, new, strict=True)
    return model, layers


#: components whose typical t is taken together (full and linear attention layers
#: alternate in hybrid models; each alone may occur in one layer only)
REFERENCE_GROUPS = {"attn": "attention", "linear_attn": "attention"}


def typical_t(span_t: dict[str, list[float]]) -> dict[str, float]:
    """Per component: the median over layers of its projection t (or of any per-layer
    value), pooled within :data:`REFERENCE_GROUPS` (NaN where no layer has one)."""
    pooled: dict[str, list[float]] = {}
    for comp, ts in span_t.items():
        key = REFERENCE_GROUPS.get(comp, comp)
        pooled.setdefault(key, []).extend(t for t in ts if np.isfinite(t))
    out = {}
    for comp in span_t:
        vals = pooled[REFERENCE_GROUPS.get(comp, comp)]
        out[comp] = float(np.median(vals)) if vals else float("nan")
    return out


def deviating_components(
    span_t: dict[str, list[float]],
    span_dist: dict[str, list[float]],
    t_ref: dict[str, float],
    layer: int,
    tol: float,
) -> list[str]:
    """Components of ``layer`` whose t is more than ``tol`` from ``t_ref``, or whose
    distance from the parents' line exceeds the component's usual one (the median over
    layers, :func:`typical_t` pooling) by more than ``tol`` x |B - A|. A merge that leaves
    the line everywhere (TIES, DARE) deviates only where a layer is unusual."""
    d_ref = typical_t(span_dist)
    out = []
    for comp, ts in span_t.items():
        t, ref, d = ts[layer], t_ref.get(comp, float("nan")), span_dist[comp][layer]
        far = np.isfinite(t) and np.isfinite(ref) and abs(t - ref) > tol
        if far or _off_line(d, d_ref.get(comp, 0.0), tol):
            out.append(comp)
    return out


def _off_line(dist: float, usual: float, tol: float) -> bool:
    """A component's distance from the parents' line exceeds its usual one (the median
    over layers; 0 when unknown) by more than ``tol``."""
    return bool(np.isfinite(dist) and dist - (usual if np.isfinite(usual) else 0.0) > tol)


def leaving_span_components(
    span_t: dict[str, list[float]],
    span_dist: dict[str, list[float]],
    t_ref: dict[str, float],
    layer: int,
    tol: float,
) -> list[str]:
    """The deviating components of ``layer`` (:func:`deviating_components`) whose weights
    are no mix of the parents: t outside ``[-tol, 1 + tol]`` (an extrapolation past a
    parent) or farther than usual from the parents' line (a scaled layer, a transplant).
    A component moved to another t inside [0, 1] is a different mix of the parents, which
    a recipe may choose on purpose (a golden layer taken from the other parent)."""
    d_ref = typical_t(span_dist)
    out = []
    for comp in deviating_components(span_t, span_dist, t_ref, layer, tol):
        t = span_t[comp][layer]
        past = np.isfinite(t) and (t < -tol or t > 1.0 + tol)
        if past or _off_line(span_dist[comp][layer], d_ref.get(comp, 0.0), tol):
            out.append(comp)
    return out


def flag_layers(
    recovery: dict[str, np.ndarray],
    deviating: Sequence[Sequence[str]],
    opt: LocalizeOptions,
    leaving: Sequence[Sequence[str]] | None = None,
) -> list[int]:
    """The flagged layers, most likely damaged first: layers whose deviation leaves the
    parents' span (``leaving``, :func:`leaving_span_components`; ``deviating`` when not
    given) and whose span candidate recovers more than ``deviation_margin`` (by that
    recovery), then the other layers whose best recovery exceeds ``margin`` (by best
    recovery).

    A deviation that costs probe loss is direct evidence of damage at that layer; a layer
    that only a parent's copy improves is evidence that the parent is better there, which
    an undamaged merge shows too, so it needs the larger margin and comes second. So does
    a layer set to another mix of the parents (t inside [0, 1], on the line): a recipe
    may do that on purpose.

    When every layer deviates (:func:`every_layer_deviates`) a deviation is no evidence
    about any layer: the deviation route is off, and the layers whose measured revert
    effect (best recovery of any candidate) exceeds ``margin`` are flagged, ranked by it."""
    best = np.max(np.stack([np.asarray(recovery[c]) for c in CANDIDATES]), axis=0)
    span = np.asarray(recovery["span"])
    L = len(best)
    if every_layer_deviates(deviating):
        return [int(i) for i in sorted(np.flatnonzero(best > opt.margin), key=lambda i: -best[i])]
    route = deviating if leaving is None else leaving
    first = [i for i in range(L) if route[i] and span[i] > opt.deviation_margin]
    second = [i for i in range(L) if i not in first and best[i] > opt.margin]
    first.sort(key=lambda i: -span[i])
    second.sort(key=lambda i: -best[i])
    return [int(i) for i in first + second]


@torch.no_grad()
def localize(
    child: nn.Module,
    parent_a: nn.Module,
    parent_b: nn.Module,
    batches: ProbeBatches,
    *,
    loss_tokens: str = "completion",
    options: LocalizeOptions | None = None,
    budget_bytes: int | None = SWAP_BUDGET_BYTES,
) -> Localization:
    """Swap scans of the child against parent A, parent B and the span candidate, plus
    the weight-space projection of every layer; the child is left as it was."""
    from darwinmerge.mri.layout import resolve_layout

    opt = options or LocalizeOptions()
    lc, la, lb = (resolve_layout(m).layers for m in (child, parent_a, parent_b))
    L = len(lc)
    comps = layer_components(child, lc)
    span_t: dict[str, list[float]] = {}
    span_dist: dict[str, list[float]] = {}
    for i in range(L):
        ts, ds = span_projection(
            lc[i].state_dict(), la[i].state_dict(), lb[i].state_dict(), comps[i]
        )
        for comp in ts:
            span_t.setdefault(comp, [float("nan")] * L)[i] = ts[comp]
            span_dist.setdefault(comp, [float("nan")] * L)[i] = ds[comp]
    t_ref = typical_t(span_t)
    span_model, _ = _span_model(child, la, lb, comps, t_ref)
    swapped: dict[str, np.ndarray] = {}
    loss = np.zeros(0)
    for name, source in (("span", span_model), ("A", parent_a), ("B", parent_b)):
        res = swap_scan(child, source, batches, loss_tokens=loss_tokens, budget_bytes=budget_bytes)
        swapped[name] = res.loss_swapped
        loss = res.loss
    del span_model
    base = float(np.mean(loss))
    rec = {
        n: (base - s.mean(axis=0)) / base if base > 0 else np.zeros(L) for n, s in swapped.items()
    }
    stack = np.stack([rec[n] for n in CANDIDATES])  # [K, L]
    best_idx = stack.argmax(axis=0)
    recovery = stack.max(axis=0)
    deviating = [deviating_components(span_t, span_dist, t_ref, i, opt.deviation) for i in range(L)]
    leaving = [
        leaving_span_components(span_t, span_dist, t_ref, i, opt.deviation) for i in range(L)
    ]
    flagged = flag_layers(rec, deviating, opt, leaving)
    notes = []
    if every_layer_deviates(deviating):
        notes.append(
            f"every one of the {L} layers deviates from the parents' weights, so the weights "
            "name no layer: a layer is flagged only when its measured revert effect "
            f"exceeds the margin ({opt.margin:.1%}), ranked by it"
        )
    return Localization(
        categories=list(batches.categories),
        num_layers=L,
        loss_tokens=loss_tokens,
        loss=[float(x) for x in loss],
        swapped={n: s.tolist() for n, s in swapped.items()},
        span_t=span_t,
        span_dist=span_dist,
        t_ref=t_ref,
        recovery=[float(x) for x in recovery],
        best=[CANDIDATES[int(k)] for k in best_idx],
        flagged=flagged,
        margin=opt.margin,
        deviating=deviating,
        leaving=leaving,
        deviation_margin=opt.deviation_margin,
        notes=notes,
    )
