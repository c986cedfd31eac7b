"""Parent comparison: the cheap advantage map (BI_A - BI_B) and the causal layer-swap scan.

Swap scan: for every layer l, layer l of the resident model X is overwritten in place
with the tensors of layer l of the other parent Y, the probe loss per category is
measured, and the original tensors are restored. The forward pass restarts at layer l
from the cached inputs of layer l of X (recorded once by :class:`Capture` with
``keep_layer_inputs``), so layers below l are never recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from darwinmerge.errors import ArchitectureMismatchError, EvaluationError
from darwinmerge.mri.capture import LayerInputs, _first_tensor
from darwinmerge.mri.layout import ResolvedLayout, resolve_layout
from darwinmerge.mri.probes import ProbeBatches
from darwinmerge.mri.scan import (
    RecordedInputs,
    Scan,
    _loss_per_category,
    scan_and_record,
    sequence_nll,
)
from darwinmerge.mri.store import ArrayRecord

__all__ = [
    "ComparisonScan",
    "SwapResult",
    "compare_scans",
    "swap_scan",
    "spearman",
    "swapped_layer",
]

Progress = Callable[[int], None]

#: Relative tolerance of the restart-path check (restart at layer 0 must reproduce the
#: model's own forward loss).
RESTART_RTOL = 1e-4


@dataclass(frozen=True)
class SwapResult:
    """Loss per category of X, and of X with layer l taken from Y: ``loss_swapped`` [C, L]."""

    loss: np.ndarray
    loss_swapped: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.loss_swapped - self.loss[:, None]


class swapped_layer:  # noqa: N801 - used as a context manager
    """``with swapped_layer(layer_x, layer_y):`` X's layer holds Y's tensors, restored after."""

    def __init__(self, target: nn.Module, source: nn.Module) -> None:
        self.target, self.source = target, source
        self._saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> nn.Module:
        dst = self.target.state_dict()
        src = self.source.state_dict()
        if dst.keys() != src.keys() or any(dst[k].shape != src[k].shape for k in dst):
            raise ArchitectureMismatchError(
                "layer swap: the two parents' decoder layers differ in tensor names or shapes"
            )
        with torch.no_grad():
            for k, t in dst.items():
                self._saved[k] = t.clone()
                t.copy_(src[k])
        return self.target

    def __exit__(self, *exc: Any) -> None:
        dst = self.target.state_dict()
        with torch.no_grad():
            for k, t in self._saved.items():
                dst[k].copy_(t)
        self._saved.clear()


def _restart_nll(
    layout: ResolvedLayout,
    inputs: list[LayerInputs],
    batches: ProbeBatches,
    start: int,
    limit: int | None = None,
) -> np.ndarray:
    nll = np.full(batches.num_sequences, np.nan)
    for batch, saved in list(zip(batches, inputs, strict=True))[:limit]:
        h = saved.hidden[start]
        for j in range(start, layout.num_layers):
            h = _first_tensor(layout.layers[j](h, **saved.kwargs[j]))
        logits = layout.lm_head(layout.norm(h))
        s, _ = sequence_nll(logits, batch)
        nll[batch.seq_index.numpy()] = s.numpy()
    return nll


@torch.no_grad()
def swap_scan(
    model_x: nn.Module,
    model_y: nn.Module,
    batches: ProbeBatches,
    *,
    layers: list[int] | None = None,
    recorded: RecordedInputs | None = None,
    progress: Progress | None = None,
) -> SwapResult:
    """Loss per category of ``model_x`` and, for each layer l, of ``model_x`` with layer l
    replaced by layer l of ``model_y`` (in memory; ``model_x`` is restored).

    ``recorded`` (from :func:`~darwinmerge.mri.scan.scan_and_record` of ``model_x`` on the
    same batches) saves the baseline pass."""
    lx, ly = resolve_layout(model_x), resolve_layout(model_y)
    if lx.num_layers != ly.num_layers:
        raise ArchitectureMismatchError(
            f"layer swap needs equal depth; got {lx.num_layers} and {ly.num_layers} layers"
        )
    if recorded is None:
        _, recorded = scan_and_record(model_x, batches, routers=False)
    if len(recorded.layers) != len(batches):
        raise EvaluationError("recorded layer inputs do not belong to these probe batches")
    inputs, nll0, cnt = recorded.layers, recorded.nll_sum, recorded.nll_count
    seq_cat = batches.seq_category.numpy()
    C = len(batches.categories)
    check = _restart_nll(lx, inputs, batches, 0, limit=1)  # first batch is enough
    seen = np.isfinite(check)
    if not np.allclose(
        check[seen], nll0[seen], rtol=RESTART_RTOL, atol=1e-6 * max(1.0, float(cnt.max()))
    ):
        raise EvaluationError(
            f"{lx.family}: restarting the forward pass at layer 0 does not reproduce the "
            f"model's loss (max diff {np.abs(check[seen] - nll0[seen]).max():.3g}); the swap scan "
            "cannot be trusted for this model"
        )
    todo = list(range(lx.num_layers)) if layers is None else layers
    out = np.full((C, lx.num_layers), np.nan)
    for layer in todo:
        with swapped_layer(lx.layers[layer], ly.layers[layer]):
            nll = _restart_nll(lx, inputs, batches, layer)
        out[:, layer] = _loss_per_category(nll, cnt, seq_cat, C)
        if progress is not None:
            progress(1)
    return SwapResult(loss=_loss_per_category(nll0, cnt, seq_cat, C), loss_swapped=out)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when one side is constant."""

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):
            sel = v == val
            r[sel] = r[sel].mean()
        return r

    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(eq=False)
class ComparisonScan(ArrayRecord):
    """Parents A and B side by side. ``advantage`` = BI_A - BI_B [C, L]. ``swap_ab`` [C, L]:
    loss change of A when its layer l comes from B; ``swap_ba`` the reverse.
    ``swap_advantage`` = (swap_ab - swap_ba) / 2: positive where A's layer l is the better
    one (taking B's hurts A, giving A's helps B)."""

    KIND = "comparison"

    model_a: str
    model_b: str
    categories: list[str]
    num_layers: int
    agreement_spearman: list[float]  # per category, advantage vs swap_advantage
    agreement_sign: float  # share of cells where both maps have the same sign
    bi_a: np.ndarray
    bi_b: np.ndarray
    advantage: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    swap_ab: np.ndarray
    swap_ba: np.ndarray
    swap_advantage: np.ndarray


def compare_scans(
    scan_a: Scan,
    scan_b: Scan,
    swap_ab: SwapResult | None = None,
    swap_ba: SwapResult | None = None,
) -> ComparisonScan:
    """Combine two scans (same probes) and, optionally, both swap directions."""
    if scan_a.categories != scan_b.categories or scan_a.num_layers != scan_b.num_layers:
        raise ArchitectureMismatchError(
            "the two scans differ in probe categories or layer count; scan both parents "
            "with the same probes"
        )
    C, L = scan_a.bi.shape
    nan = np.full((C, L), np.nan)
    ab = swap_ab.delta if swap_ab is not None else nan
    ba = swap_ba.delta if swap_ba is not None else nan
    adv = scan_a.bi - scan_b.bi
    sadv = (ab - ba) / 2
    rho = [
        spearman(adv[c], sadv[c]) if np.isfinite(sadv[c]).all() else float("nan") for c in range(C)
    ]
    ok = np.isfinite(sadv)
    sign = float((np.sign(adv[ok]) == np.sign(sadv[ok])).mean()) if ok.any() else float("nan")
    return ComparisonScan(
        model_a=scan_a.model,
        model_b=scan_b.model,
        categories=list(scan_a.categories),
        num_layers=L,
        agreement_spearman=rho,
        agreement_sign=sign,
        bi_a=scan_a.bi,
        bi_b=scan_b.bi,
        advantage=adv,
        loss_a=scan_a.loss,
        loss_b=scan_b.loss,
        swap_ab=ab,
        swap_ba=ba,
        swap_advantage=sadv,
    )
