"""Base-relative methods that weigh models by their agreement: Model Stock, SCE, RAM.

Definitions follow mergekit 0.1.5 (``merge_methods/model_stock.py``, ``sce.py``,
``ram.py``). Every statistic (angles, variances, top-k, counts, per-model weights) is
taken per group (per expert and projection on fused expert tensors); ``group_dims=0`` is
mergekit's per-tensor behaviour. Task vectors ``tau_i = x_i - base``. Computation in
float32 (float64 for float64 inputs), result in the base's dtype.

* ``model_stock(base; x_1..x_n)``, n >= 2: ``c`` = the mean over pairs of
  ``cos(tau_i, tau_j)`` (norm product clamped at 1e-6), ``t = n c / (1 + (n - 1) c)``
  (0, i.e. the base, where the denominator is below 1e-6 in magnitude), result
  ``t mean(x_i) + (1 - t) base``. ``filter_wise``: one ``c`` per row (last axis) instead
  of one per group.
* ``sce(base; x_1..x_n)``: with ``select_topk < 1``, keep the ``int(k * nnz)`` entries
  of largest variance of the ``tau_i`` across models (``nnz``: entries of nonzero
  variance); elect a sign per entry (sign of ``sum_i tau_i``, + on 0); weigh model ``i``
  by ``m_i = mean(tau_i^2)`` normalised to sum 1 (uniform when the sum is < 1e-6); the
  result is ``base + sum_i m_i e_i tau_i / max(sum_i m_i e_i, 1e-6)`` with ``e_i = 1``
  where ``tau_i`` has the elected (nonzero) sign.
* ``ram(base; x_1..x_n)``: an entry is *touched* by model ``i`` when ``|tau_i| > eps``;
  entries touched by one model take its ``tau``, entries touched by several the mean of
  theirs: ``base + sum_i [tau_i]_eps (U + O / c)``, ``c`` the number touching, ``U``,
  ``O`` the masks ``c == 1``, ``c > 1``.
* ``ramplus_tl``: as ``ram``, with model ``i``'s unique entries scaled by
  ``1 + r min(max(rho_i, 0), alpha)``, ``rho_i = |touched_i and O| / max(|touched_i and
  U|, eps)`` (counts per group).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from darwinmerge.merge.methods import implement_plain
from darwinmerge.merge.ops.groups import by_group, check_inputs, compute_dtype

__all__ = ["model_stock", "ram", "ramplus_tl", "sce"]


def _task_vectors(
    tensors: Sequence[torch.Tensor], base: torch.Tensor, group_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``base`` as ``[G, n]`` and the task vectors as ``[N, G, n]`` (compute dtype)."""
    check_inputs(tensors, group_dims, base=base)
    dtype = compute_dtype(base)
    origin = by_group(base.to(dtype), group_dims).flatten(1)
    taus = torch.stack([by_group(t.to(dtype), group_dims).flatten(1) - origin for t in tensors])
    return origin, taus


def model_stock(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    filter_wise: bool = False,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``t mean(x_i) + (1 - t) base`` with ``t`` from the mean pairwise cosine (module doc)."""
    check_inputs(tensors, group_dims, base=base)
    dtype = compute_dtype(base)
    w0 = by_group(base.to(dtype), group_dims)
    ws = [by_group(t.to(dtype), group_dims) for t in tensors]
    if filter_wise and w0.dim() == 2:  # a group that is one row
        w0, ws = w0.unsqueeze(1), [w.unsqueeze(1) for w in ws]
    elif not filter_wise:  # one vector per group
        w0, ws = w0.flatten(1), [w.flatten(1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(
        singular,
        torch.zeros_like(cos),
        n * cos / torch.where(singular, torch.ones_like(denominator), denominator),
    )
    average = sum(ws) / n
    result = t * average + (1 - t) * w0
    return result.reshape(base.shape).to(out_dtype or base.dtype)


def _top_variance_mask(taus: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per group, 1 on the ``int(fraction * nnz)`` entries of largest variance over models."""
    variance = torch.var(taus, dim=0, unbiased=False)  # [G, n]
    mask = torch.zeros_like(variance)
    for g in range(variance.shape[0]):
        k = int(int(torch.count_nonzero(variance[g])) * fraction)
        if k > 0:
            mask[g, torch.topk(variance[g].abs(), k=k).indices] = 1
    return mask


def sce(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    select_topk: float = 1.0,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Select (top variance), calculate (energy weights), erase (sign election)."""
    origin, taus = _task_vectors(tensors, base, group_dims)
    if select_topk < 1:
        taus = taus * _top_variance_mask(taus, select_topk)
    elected = torch.where(taus.sum(dim=0) >= 0, 1.0, -1.0).to(taus.dtype)
    agrees = taus.sign() == elected  # zero entries never agree
    energy = taus.square().mean(dim=2, keepdim=True)  # [N, G, 1]
    total = energy.sum(dim=0, keepdim=True)
    uniform = torch.full_like(energy, 1.0 / len(tensors))
    weights = torch.where(total.abs() < 1e-6, uniform, energy / total) * agrees
    merged = (taus * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=1e-6)
    return (origin + merged).reshape(base.shape).to(out_dtype or base.dtype)


def _ram(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    *,
    epsilon: float,
    r: float | None,
    alpha: float,
    group_dims: int,
    out_dtype: torch.dtype | None,
) -> torch.Tensor:
    origin, taus = _task_vectors(tensors, base, group_dims)
    touched = taus.abs() > epsilon  # [N, G, n]
    count = touched.sum(dim=0)  # [G, n]
    unique, overlap = count == 1, count > 1
    kept = taus * touched
    scale = torch.ones(taus.shape[:2] + (1,), dtype=taus.dtype, device=taus.device)
    if r is not None:  # RAM+: unique entries of a model that overlaps a lot count more
        shared = (touched & overlap).sum(dim=2, keepdim=True)
        own = (touched & unique).sum(dim=2, keepdim=True)
        rho = shared / own.to(taus.dtype).clamp(min=epsilon)
        scale = 1 + r * rho.clamp(min=0, max=alpha)
    merged = (kept * unique * scale + kept * overlap / count.clamp(min=1)).sum(dim=0)
    return (origin + merged).reshape(base.shape).to(out_dtype or base.dtype)


def ram(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    epsilon: float = 1e-5,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reinforced agent merging: unique deltas kept, overlapping deltas averaged."""
    return _ram(
        tensors,
        base,
        epsilon=epsilon,
        r=None,
        alpha=0.0,
        group_dims=group_dims,
        out_dtype=out_dtype,
    )


def ramplus_tl(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    r: float = 0.1,
    alpha: float = 0.2,
    epsilon: float = 1e-5,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """RAM+ (tensor-local): ``ram`` with each model's unique deltas rescaled by overlap."""
    return _ram(
        tensors,
        base,
        epsilon=epsilon,
        r=r,
        alpha=alpha,
        group_dims=group_dims,
        out_dtype=out_dtype,
    )


# ---- attached to the declarations (merge/methods.py) ----------------------------------

implement_plain(
    "model_stock",
    lambda xs, base, mp, p, g: model_stock(
        xs, base=base, filter_wise=bool(p["filter_wise"]), group_dims=g
    ),
)
implement_plain(
    "sce",
    lambda xs, base, mp, p, g: sce(
        xs, base=base, select_topk=float(p["select_topk"]), group_dims=g
    ),
)
implement_plain(
    "ram",
    lambda xs, base, mp, p, g: ram(xs, base=base, epsilon=float(p["epsilon"]), group_dims=g),
)
implement_plain(
    "ramplus_tl",
    lambda xs, base, mp, p, g: ramplus_tl(
        xs,
        base=base,
        r=float(p["r"]),
        alpha=float(p["alpha"]),
        epsilon=float(p["epsilon"]),
        group_dims=g,
    ),
)
