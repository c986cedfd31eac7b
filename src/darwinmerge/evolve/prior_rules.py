"""Per-space rules of the MRI prior: scan evidence -> gene means and confidences.

One function per genome space kind (docs/evolve.md, "Prior"); each space registers
its rule with itself (:func:`darwinmerge.evolve.genes.genome_space`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from darwinmerge.evolve.genes import GenomeSpace
from darwinmerge.evolve.prior import HEALTH_TIE, ScanEvidence, _t
from darwinmerge.merge.recipe import MERGED

__all__ = ["component_offset", "layerwise_prior", "mergekit_prior", "seed_prior", "segments"]


def segments(layer_z: np.ndarray, golden: int | None, max_blocks: int) -> list[list[int]]:
    """Contiguous layers with the same sign of evidence; the golden layer alone; then the
    weakest block (smallest |sum z|, golden excepted) merged into a neighbour until at
    most ``max_blocks`` remain (the neighbour with the same sign, else the weaker one)."""
    L = len(layer_z)
    sign = np.sign(layer_z)
    segs: list[list[int]] = []
    for layer in range(L):
        new = not segs or layer == golden or segs[-1][-1] == golden
        if not new and sign[layer] != 0 and sign[layer] != np.sign(layer_z[segs[-1]].sum()):
            new = True
        if new:
            segs.append([layer])
        else:
            segs[-1].append(layer)
    if max_blocks == 1:
        return [list(range(L))]
    while len(segs) > max_blocks:
        weight = [math.inf if s == [golden] else abs(float(layer_z[s].sum())) for s in segs]
        i = int(np.argmin(weight))
        candidates = [j for j in (i - 1, i + 1) if 0 <= j < len(segs) and segs[j] != [golden]]
        if not candidates:  # only the golden layer next to it: merge into it after all
            candidates = [j for j in (i - 1, i + 1) if 0 <= j < len(segs)]
        own = np.sign(layer_z[segs[i]].sum())
        same = [j for j in candidates if np.sign(layer_z[segs[j]].sum()) == own]
        j = (same or sorted(candidates, key=lambda k: abs(float(layer_z[segs[k]].sum()))))[0]
        lo, hi = min(i, j), max(i, j)
        segs[lo : hi + 1] = [segs[lo] + segs[hi]]
    return segs


def _router(
    ev: ScanEvidence, layers: list[int], t: float, conf: float, a: str, b: str
) -> tuple[str, float, str]:
    diff = (
        np.nanmean(ev.health_b[layers] - ev.health_a[layers])
        if not np.isnan(ev.health_b[layers]).all()
        else 0.0
    )
    swap = b if t > 0.5 else a
    if abs(diff) < HEALTH_TIE:
        return swap, 0.5 * conf, f"router health tied ({diff:+.3f}); the swap favours {swap}"
    healthier = b if diff > 0 else a
    if healthier == swap:
        return (
            swap,
            max(conf, 0.5),
            f"{swap}'s routing is healthier ({diff:+.3f}) and wins the swap",
        )
    return MERGED, 0.0, f"{healthier}'s routing is healthier but the swap favours {swap}"


def _densities(space: GenomeSpace, ev: ScanEvidence, builder: Any) -> None:
    for name, value, dead in (
        ("density_a", ev.density_a, ev.dead_a),
        ("density_b", ev.density_b, ev.dead_b),
    ):
        if name in space.gene_names:
            builder.set(name, value, 0.5, f"1 - dead-expert share {dead:.3f}")


def component_offset(ev: ScanEvidence, part: str) -> tuple[float, float, str]:
    """(offset, confidence, reason) of one component's t against its layer's: the mean over
    layers of t(component swapped alone) - t(whole layer swapped), with the mean agreement
    of the component's swap cells as confidence. No component swaps: offset 0, no
    confidence."""
    if part not in ev.part_z:
        return 0.0, 0.0, f"no {part} swaps in the scan: offset 0"
    t_part = np.array([_t(float(z)) for z in ev.part_z[part]])
    t_layer = np.array([_t(float(z)) for z in ev.layer_z])
    offset = float(np.mean(t_part - t_layer))
    conf = float(np.mean(ev.part_conf[part]))
    why = (
        f"{part} swapped alone: B's share {t_part.mean():.2f} against the whole layer's "
        f"{t_layer.mean():.2f} (offset {offset:+.2f})"
    )
    return offset, conf, why


def seed_prior(space: Any, ev: ScanEvidence, builder: Any) -> None:
    K, L = space.config.max_blocks, space.ctx.num_layers
    segs = segments(ev.layer_z, ev.golden, K)
    builder.set(
        "ratio",
        _t(ev.non_layer_z),
        ev.non_layer_conf,
        f"outside-layer evidence {ev.non_layer_z:+.3f} (loss gap minus layer swaps)",
    )
    for gene, part in (("attn", "attention"), ("ffn", "ffn")):
        offset, conf, why = component_offset(ev, part)
        builder.set(gene, 0.5 + offset, conf, why)
    _densities(space, ev, builder)
    for k in range(1, K):
        if k < len(segs):
            cut = segs[k][0]
            builder.set(
                f"cut_{k}",
                cut,
                0.5,
                f"evidence changes sign (or golden layer) at L{cut}",
                box=(max(0.0, (cut - 1.4) / L), min(1.0, (cut + 1.4) / L)),
            )
        else:
            builder.set(
                f"cut_{k}", L, 1.0, "unused block (cut pinned at the end)", box=((L - 0.5) / L, 1.0)
            )
    for k in range(K):
        if k >= len(segs):
            builder.set(f"t_{k + 1}", 0.5, 0.0, "empty block")
            builder.set(f"router_{k + 1}", MERGED, 0.0, "empty block")
            continue
        layers = segs[k]
        if layers == [ev.golden]:
            z, conf = ev.golden_z, ev.golden_conf
            why = f"golden layer L{ev.golden} ({ev.specialty}) evidence {z:+.3f}"
        else:
            z = float(ev.layer_z[layers].mean())
            conf = float(ev.layer_conf[layers].mean())
            why = f"L{layers[0]}-{layers[-1]} swap evidence {z:+.3f}"
        t = _t(z)
        builder.set(f"t_{k + 1}", t, conf, why)
        src, rconf, rwhy = _router(ev, layers, t, conf, space.a, space.b)
        builder.set(f"router_{k + 1}", src, rconf, rwhy)
    if "revive" in space.gene_names:
        if ev.revivable:
            builder.set(
                "revive",
                min(ev.revive_threshold, space.config.revive_max),
                0.5,
                f"{ev.revivable} experts dead in B and alive in A",
            )
        else:
            builder.set(
                "revive", 0.0, 1.0, "no expert is dead in B and alive in A: off", box=(0.0, 0.02)
            )


#: layerwise group -> the component swap whose evidence sets it (others: the whole layer)
LAYERWISE_PARTS = {"attention": "attention", "experts": "ffn", "shared": "ffn", "router": "ffn"}


def _layer_curve(
    ev: ScanEvidence, positions: list[float], part: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    z = ev.layer_z if part is None else ev.part_z[part]
    conf = ev.layer_conf if part is None else ev.part_conf[part]
    t = np.array([_t(float(v)) for v in z])
    grid = np.arange(len(z), dtype=float)
    return np.interp(positions, grid, t), np.interp(positions, grid, conf)


def layerwise_prior(space: Any, ev: ScanEvidence, builder: Any) -> None:
    from darwinmerge.evolve.space_layerwise import LAYERWISE_GROUPS

    positions = space.anchor_positions()
    for group in LAYERWISE_GROUPS:
        part = LAYERWISE_PARTS.get(group)
        if part in ev.part_z:
            t, conf = _layer_curve(ev, positions, part)
            why = f"{part} swap evidence at this depth"
        else:
            t, conf = _layer_curve(ev, positions)
            why = "layer swap evidence at this depth"
        for i in range(space.points):
            builder.set(f"{group}_{i}", t[i], conf[i], why)
    builder.set(
        "non_layer",
        _t(ev.non_layer_z),
        ev.non_layer_conf,
        f"outside-layer evidence {ev.non_layer_z:+.3f}",
    )
    _densities(space, ev, builder)


def mergekit_prior(space: Any, ev: ScanEvidence, builder: Any) -> None:
    if len(space.models) != 2:
        return  # the scans compare two parents; more models start blind
    cfg = space.config
    order = [space.ctx.parent_names.index(m) for m in space.models]  # 0 = A, 1 = B
    for gi in range(space.groups):
        layers = list(range(gi * space.step, (gi + 1) * space.step))
        pos = [float(np.mean(layers))]
        t_arr, c_arr = _layer_curve(ev, pos)
        t, conf = float(t_arr[0]), float(c_arr[0])
        for m, which in zip(space.models, order, strict=True):
            share = t if which == 1 else 1.0 - t
            for filt in space.sets:
                suffix = f"[{filt}]" if filt is not None else ""
                if cfg.merge_method == "slerp":
                    d = max(-1.0, min(1.0, math.log(t / (1 - t))))  # sigmoid(w_B - w_A) = t
                    w = 0.5 + (d / 2 if which == 1 else -d / 2)
                    builder.set(f"{m}.t@{gi}", w * cfg.max_weight, conf, "slerp t from layer swaps")
                    continue
                builder.set(
                    f"{m}.weight{suffix}@{gi}",
                    share * cfg.max_weight,
                    conf,
                    f"share {share:.3f} from layer swaps",
                )
                if "density" in space.params:
                    dens = ev.density_b if which == 1 else ev.density_a
                    builder.set(f"{m}.density{suffix}@{gi}", dens, 0.5, "1 - dead-expert share")
