"""Weight-space scan of two parents (and an optional common base), streamed tensor by
tensor from the checkpoints; no model is built.

Per decoder layer x component (the :mod:`darwinmerge.arch` roles), over all tensors of
that component in that layer:

* ``rel_delta = ||B - A|| / ||A||`` (Frobenius norms over the concatenated elements);
* with a base: task vectors ``tA = A - base``, ``tB = B - base``;
  ``task_cosine = <tA, tB> / (||tA|| ||tB||)`` and ``sign_conflict`` = share of elements
  with ``sign(tA) != sign(tB)`` among the elements where both task vectors are nonzero.

Tensors without a layer (embeddings, lm_head, final norm, MTP, vision) are reported per
component in the ``global_*`` arrays. Pieces are matched by canonical name, so parents
with different expert layouts (fused vs per expert) or prefixes compare correctly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from darwinmerge.arch import COMPONENTS, Architecture, check_compatible, detect_architecture
from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import ArchitectureMismatchError
from darwinmerge.mri.store import ArrayRecord

__all__ = ["WeightScan", "weight_scan"]

Progress = Callable[[int], None]

_STATS = ("a2", "d2", "dot", "t1", "t2", "both", "conflict")


@dataclass(eq=False)
class WeightScan(ArrayRecord):
    """Weight-space differences; arrays are [L, K] over ``components`` (NaN where a layer
    has no tensor of that component) and [G] over ``global_components``."""

    KIND = "weights"

    model_a: str
    model_b: str
    base: str | None
    num_layers: int
    components: list[str]
    global_components: list[str]
    rel_delta: np.ndarray
    task_cosine: np.ndarray
    sign_conflict: np.ndarray
    global_rel_delta: np.ndarray
    global_task_cosine: np.ndarray
    global_sign_conflict: np.ndarray


def _open(path: str | Path) -> tuple[CheckpointReader, Architecture]:
    reader = CheckpointReader(path)
    keys = reader.keys()
    arch = detect_architecture(reader.config, keys, {k: reader.shape(k) for k in keys})
    return reader, arch


def _read(reader: CheckpointReader, arch: Architecture, canonical: str) -> torch.Tensor:
    where = arch.locate(canonical)
    if where is None:
        raise ArchitectureMismatchError(f"{reader.path}: no tensor holds {canonical!r}")
    name, index = where
    t = reader.get_slice(name, index, copy=False) if index else reader.get(name, copy=False)
    return t.to(torch.float64)


def _accumulate(
    acc: dict[str, float], a: torch.Tensor, b: torch.Tensor, base: torch.Tensor | None
) -> None:
    acc["a2"] += float((a * a).sum())
    d = b - a
    acc["d2"] += float((d * d).sum())
    if base is not None:
        ta, tb = a - base, b - base
        acc["dot"] += float((ta * tb).sum())
        acc["t1"] += float((ta * ta).sum())
        acc["t2"] += float((tb * tb).sum())
        both = (ta != 0) & (tb != 0)
        acc["both"] += float(both.sum())
        acc["conflict"] += float((both & (torch.sign(ta) != torch.sign(tb))).sum())


def _finish(acc: dict[str, float], with_base: bool) -> tuple[float, float, float]:
    rel = np.sqrt(acc["d2"]) / np.sqrt(acc["a2"]) if acc["a2"] > 0 else float("nan")
    if not with_base:
        return rel, float("nan"), float("nan")
    den = np.sqrt(acc["t1"] * acc["t2"])
    cos = acc["dot"] / den if den > 0 else float("nan")
    conf = acc["conflict"] / acc["both"] if acc["both"] > 0 else float("nan")
    return rel, cos, conf


def weight_scan(
    path_a: str | Path,
    path_b: str | Path,
    base: str | Path | None = None,
    *,
    progress: Progress | None = None,
) -> WeightScan:
    """Stream both parents (and ``base``) piece by piece and aggregate per layer x component."""
    ra, aa = _open(path_a)
    rb, ab = _open(path_b)
    check_compatible(aa, ab)
    rbase = abase = None
    if base is not None:
        rbase, abase = _open(base)
        check_compatible(aa, abase)
    per_layer: dict[tuple[int, str], dict[str, float]] = {}
    glob: dict[str, dict[str, float]] = {}
    try:
        for name in aa.keys:
            role = aa.role(name)
            for piece in aa.pieces(name):
                if ab.locate(piece.canonical) is None:
                    raise ArchitectureMismatchError(
                        f"{rb.path}: parent B has no tensor for {piece.canonical!r}"
                    )
                ta = _read(ra, aa, piece.canonical)
                tb = _read(rb, ab, piece.canonical)
                tbase = _read(rbase, abase, piece.canonical) if rbase is not None else None  # type: ignore[arg-type]
                if role.layer is None:
                    acc = glob.setdefault(role.component, dict.fromkeys(_STATS, 0.0))
                else:
                    acc = per_layer.setdefault(
                        (role.layer, role.component), dict.fromkeys(_STATS, 0.0)
                    )
                _accumulate(acc, ta, tb, tbase)
            if progress is not None:
                progress(1)
    finally:
        for r in (ra, rb, rbase):
            if r is not None:
                r.close()
    comps = [c for c in COMPONENTS if any(k[1] == c for k in per_layer)]
    gcomps = [c for c in COMPONENTS if c in glob]
    L, K = aa.num_layers, len(comps)
    rel, cos, conf = (np.full((L, K), np.nan) for _ in range(3))
    for (layer, comp), acc in per_layer.items():
        (
            rel[layer, comps.index(comp)],
            cos[layer, comps.index(comp)],
            conf[layer, comps.index(comp)],
        ) = _finish(acc, base is not None)
    g = np.array([_finish(glob[c], base is not None) for c in gcomps]).reshape(len(gcomps), 3)
    return WeightScan(
        model_a=str(path_a),
        model_b=str(path_b),
        base=None if base is None else str(base),
        num_layers=L,
        components=comps,
        global_components=gcomps,
        rel_delta=rel,
        task_cosine=cos,
        sign_conflict=conf,
        global_rel_delta=g[:, 0].copy(),
        global_task_cosine=g[:, 1].copy(),
        global_sign_conflict=g[:, 2].copy(),
    )
