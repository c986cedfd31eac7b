"""Phase 1: turn the MRI scans into a starting genome, step sizes and a search box.

:func:`scan_evidence` reduces a :class:`~darwinmerge.mri.ComparisonScan` and the two
parents' :class:`~darwinmerge.mri.Scan` s to per-layer evidence; :func:`mri_prior` maps
it onto the genes of a space; :func:`blind_prior` is the start without scans. Every rule
and constant is documented in docs/evolve.md ("Prior").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.genes import SPACES, GenomeSpace

__all__ = [
    "KAPPA",
    "SIGMA_BLIND",
    "SIGMA_MIN",
    "Prior",
    "ScanEvidence",
    "blind_prior",
    "mri_prior",
    "prior_from_scans",
    "scan_evidence",
]

#: slope of the logistic map from evidence z in [-1, 1] to B's share t
KAPPA = 4.0
#: step size of a gene the scans say nothing about (mergekit-evolve's sigma0)
SIGMA_BLIND = 1.0 / 6.0
#: step size of a gene the scans agree on completely
SIGMA_MIN = 0.05
#: router health differences below this count as a tie
HEALTH_TIE = 0.02


@dataclass(frozen=True)
class Prior:
    """Start of the search in unit space: per gene mean, step size, box and a reason."""

    mean: np.ndarray
    sigma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        d = len(self.mean)
        if not all(len(a) == d for a in (self.sigma, self.lower, self.upper, self.reasons)):
            raise ValueError("prior: mean, sigma, lower, upper and reasons differ in length")
        ok = (0 <= self.lower) & (self.lower <= self.mean) & (self.mean <= self.upper)
        if not (ok & (self.upper <= 1) & (self.sigma > 0)).all():
            raise ValueError("prior: need 0 <= lower <= mean <= upper <= 1 and sigma > 0")


def blind_prior(space: GenomeSpace) -> Prior:
    """Mean = the space's blind start (0.5; mergekit-evolve's x0 for that space), sigma
    1/6, box [0, 1] on every gene."""
    d = space.dim
    return Prior(
        mean=space.blind_mean(),
        sigma=np.full(d, SIGMA_BLIND),
        lower=np.zeros(d),
        upper=np.ones(d),
        reasons=("blind start (no scans)",) * d,
    )


def _t(z: float) -> float:
    """B's share from evidence ``z`` (positive: A's parts are better)."""
    return 1.0 / (1.0 + math.exp(KAPPA * z))


def _agreement(values: np.ndarray) -> float:
    """|sum| / sum |.|: 1 when every value has the same sign, 0 when they cancel."""
    total = float(np.abs(values).sum())
    return abs(float(values.sum())) / total if total > 0 else 0.0


def _gap_scale(delta: np.ndarray, loss_a: np.ndarray, loss_b: np.ndarray) -> np.ndarray:
    floor = 1e-3 * np.maximum(np.maximum(np.abs(loss_a), np.abs(loss_b)), 1e-6)
    return np.maximum(np.abs(delta), floor)


@dataclass(frozen=True)
class ScanEvidence:
    """What the scans say, per layer and overall (docs/evolve.md, "Prior")."""

    categories: tuple[str, ...]
    layer_z: np.ndarray  # [L] mean evidence, positive: A's layer is better
    layer_conf: np.ndarray  # [L] agreement of the evidence cells, in [0, 1]
    non_layer_z: float
    non_layer_conf: float
    golden: int | None
    golden_z: float
    golden_conf: float
    specialty: str | None
    health_a: np.ndarray  # [L] router entropy - dead fraction (NaN for dense layers)
    health_b: np.ndarray
    density_a: float
    density_b: float
    dead_a: float
    dead_b: float
    revivable: int  # experts dead in B and alive in A
    revive_threshold: float
    #: per component swapped alone ("attention", "ffn"): [L] mean evidence and agreement,
    #: as layer_z / layer_conf (absent when the scan did not swap components)
    part_z: dict[str, np.ndarray] = field(default_factory=dict)
    part_conf: dict[str, np.ndarray] = field(default_factory=dict)


def scan_evidence(
    comparison: Any, scan_a: Any, scan_b: Any, *, target: str | None = None, base_scan: Any = None
) -> ScanEvidence:
    """Evidence from the swap scan and the parents' MoE health (``base_scan`` is accepted
    for the interface and not used by the current rules)."""
    cats = list(comparison.categories)
    sadv = np.nan_to_num(np.asarray(comparison.swap_advantage, dtype=float))
    ab = np.nan_to_num(np.asarray(comparison.swap_ab, dtype=float))
    ba = np.nan_to_num(np.asarray(comparison.swap_ba, dtype=float))
    la, lb = np.asarray(comparison.loss_a, float), np.asarray(comparison.loss_b, float)
    if not np.isfinite(np.asarray(comparison.swap_advantage, float)).any():
        raise ConfigError("prior: the comparison has no swap scan; run `darwin mri compare --swap`")
    delta = lb - la  # positive: A's whole model has the lower loss
    scale = _gap_scale(delta, la, lb)[:, None]
    z = np.clip(sadv / scale, -1, 1)  # share of the parents' gap one layer swap explains
    cells_ab = np.clip(ab / scale, -1, 1)
    cells_ba = np.clip(-ba / scale, -1, 1)
    rows = list(range(len(cats)))
    specialty = None
    if target is not None:
        upper = [c.upper() for c in cats]
        if target.upper() not in upper:
            raise ConfigError(
                f"prior: target {target!r} is not a probe category ({', '.join(cats)})"
            )
        rows = [upper.index(target.upper())]
        specialty = cats[rows[0]]
    else:
        rel = (la - lb) / np.maximum(np.maximum(la, lb), 1e-9)  # B's relative advantage
        if (rel > 0).any():
            specialty = cats[int(np.argmax(rel))]
    L = z.shape[1]
    layer_z = z[rows].mean(axis=0)
    layer_conf = _layer_agreement(cells_ab, cells_ba, rows)
    part_z, part_conf = _part_evidence(comparison, scale, rows)
    nl = np.clip((delta - sadv.sum(axis=1)) / scale[:, 0], -1, 1)[rows]
    golden, golden_z, golden_conf = None, 0.0, 0.0
    if specialty is not None:
        c = cats.index(specialty)
        g = int(np.argmin(z[c]))
        if z[c, g] < 0:
            golden = g
            if target is not None:  # asked for: the target's evidence alone sets its t
                golden_z = float(z[c, g])
                golden_conf = _agreement(np.array([cells_ab[c, g], cells_ba[c, g]]))
            else:  # B's peak layer, its t weighed over every category it may cost
                golden_z = float(layer_z[g])
                golden_conf = float(layer_conf[g])

    def health(scan: Any) -> np.ndarray:
        out = np.full(L, np.nan)
        for i, layer in enumerate(scan.sparse_layers):
            out[layer] = float(scan.router_entropy[i]) - float(scan.dead_fraction[i])
        return out

    def dead(scan: Any) -> float:
        return float(np.mean(scan.dead_fraction)) if len(scan.dead_fraction) else 0.0

    threshold = float(getattr(scan_b, "dead_threshold", 0.05))
    revivable = 0
    if len(scan_b.sparse_layers) and np.shape(scan_a.utilisation) == np.shape(scan_b.utilisation):
        ua, ub = np.asarray(scan_a.utilisation), np.asarray(scan_b.utilisation)
        revivable = int(((ub < threshold) & (ua >= threshold)).sum())
    return ScanEvidence(
        categories=tuple(cats[r] for r in rows),
        layer_z=layer_z,
        layer_conf=layer_conf,
        non_layer_z=float(nl.mean()),
        non_layer_conf=_agreement(nl),
        golden=golden,
        golden_z=golden_z,
        golden_conf=golden_conf,
        specialty=specialty,
        health_a=health(scan_a),
        health_b=health(scan_b),
        density_a=1.0 - dead(scan_a),
        density_b=1.0 - dead(scan_b),
        dead_a=dead(scan_a),
        dead_b=dead(scan_b),
        revivable=revivable,
        revive_threshold=threshold,
        part_z=part_z,
        part_conf=part_conf,
    )


def _part_evidence(
    comparison: Any, scale: np.ndarray, rows: list[int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per component swapped alone: the layer evidence and agreement of :func:`scan_evidence`
    computed on that component's swaps (layers the component is missing from: z 0, agreement
    0). Comparisons without component swaps give nothing."""
    zs: dict[str, np.ndarray] = {}
    confs: dict[str, np.ndarray] = {}
    for part in ("attention", "ffn"):
        ab = getattr(comparison, f"swap_ab_{part}", None)
        ba = getattr(comparison, f"swap_ba_{part}", None)
        if ab is None or ba is None:
            continue
        ab, ba = np.asarray(ab, dtype=float), np.asarray(ba, dtype=float)
        if not np.isfinite(ab).any():
            continue
        z = np.clip(np.nan_to_num((ab - ba) / 2) / scale, -1, 1)
        cells_ab = np.clip(np.nan_to_num(ab) / scale, -1, 1)
        cells_ba = np.clip(-np.nan_to_num(ba) / scale, -1, 1)
        zs[part] = z[rows].mean(axis=0)
        confs[part] = _layer_agreement(cells_ab, cells_ba, rows)
    return zs, confs


def _layer_agreement(cells_ab: np.ndarray, cells_ba: np.ndarray, rows: list[int]) -> np.ndarray:
    """Per layer, the agreement of both swap directions' cells over ``rows`` [L]."""
    return np.array(
        [
            _agreement(np.concatenate([cells_ab[rows, layer], cells_ba[rows, layer]]))
            for layer in range(cells_ab.shape[1])
        ]
    )


class _Builder:
    """Collects (mean, confidence, reason) per gene and turns them into a Prior."""

    def __init__(self, space: GenomeSpace) -> None:
        self.space = space
        self.rows: dict[str, tuple[float, float, str, tuple[float, float] | None]] = {}

    def set(
        self,
        name: str,
        value: Any,
        conf: float,
        reason: str,
        box: tuple[float, float] | None = None,
    ) -> None:
        gene = self.space.genes[self.space.gene_names.index(name)]
        if gene.kind == "real":
            value = min(max(float(value), gene.low), gene.high)
        self.rows[name] = (gene.unit(value), min(max(conf, 0.0), 1.0), reason, box)

    def build(self) -> Prior:
        mean, sigma, lower, upper, reasons = [], [], [], [], []
        for name in self.space.gene_names:
            m, conf, why, box = self.rows.get(name, (0.5, 0.0, "no scan evidence", None))
            s = SIGMA_MIN + (SIGMA_BLIND - SIGMA_MIN) * (1.0 - conf)
            if box is not None:
                lo, hi = box
            elif conf >= 0.5:
                lo, hi = max(0.0, m - 4 * s), min(1.0, m + 4 * s)
            else:
                lo, hi = 0.0, 1.0
            mean.append(m)
            sigma.append(s)
            lower.append(min(lo, m))
            upper.append(max(hi, m))
            reasons.append(f"{why} (confidence {conf:.2f})")
        return Prior(np.array(mean), np.array(sigma), np.array(lower), np.array(upper),
                     tuple(reasons))  # fmt: skip


def mri_prior(
    space: GenomeSpace,
    comparison: Any,
    scan_a: Any,
    scan_b: Any,
    *,
    target: str | None = None,
    base_scan: Any = None,
) -> Prior:
    """The scan-informed prior of ``space`` (rules per space in docs/evolve.md)."""
    if comparison.num_layers != space.ctx.num_layers:
        raise ConfigError(
            f"prior: the scans have {comparison.num_layers} layers, the parents "
            f"{space.ctx.num_layers}; scan these parents"
        )
    paths = space.ctx.parent_paths
    if (
        len(paths) >= 2
        and _same(comparison.model_a, paths[1])
        and _same(comparison.model_b, paths[0])
    ):
        raise ConfigError(
            f"prior: the scans compare {comparison.model_a} (A) with {comparison.model_b} (B) "
            f"but the space's parent A is {paths[0]}; scan in the recipe's parent order"
        )
    ev = scan_evidence(comparison, scan_a, scan_b, target=target, base_scan=base_scan)
    builder = _Builder(space)
    SPACES.get(space.name).prior(space, ev, builder)
    return builder.build()


def _same(a: str, b: str) -> bool:
    """Two model paths name the same folder (resolved, else by folder name)."""
    pa, pb = Path(str(a)), Path(str(b))
    return pa.resolve() == pb.resolve() or (pa.name != "" and pa.name == pb.name)


def prior_from_scans(space: GenomeSpace, scans: str | Path, *, target: str | None = None) -> Prior:
    """:func:`mri_prior` from a ``darwin mri compare`` output folder."""
    from darwinmerge.mri import ComparisonScan, Scan

    folder = Path(scans)
    if not (folder / "comparison.json").is_file():
        raise ConfigError(f"{folder}: no comparison.json; give a `darwin mri compare` folder")
    return mri_prior(
        space,
        ComparisonScan.load(folder),
        Scan.load(folder, "scan_a"),
        Scan.load(folder, "scan_b"),
        target=target,
    )
