"""Methods that take one model onto a base entry by entry: NearSwap, Arcee Fusion, and
passthrough (one model's tensor, optionally scaled).

Definitions follow mergekit 0.1.5 (``merge_methods/nearswap.py``, ``arcee_fusion.py``,
``passthrough.py``). Computation in float32 (float64 for float64 inputs), result in the
base's dtype (passthrough: the input's).

* ``nearswap(base, x; t)``: ``w = clamp(t / max(|base - x|, 1e-6), 0, 1)`` per entry,
  result ``w x + (1 - w) base``: entries closer than ``t`` take ``x``, far ones stay
  near the base. Elementwise, so groups do not matter.
* ``arcee_fusion(base, x)``: importance ``s = |x - base| * KL(softmax(x) || softmax(base))``
  (softmax and KL along the last axis of each group, ``+1e-8`` on both distributions);
  threshold ``median(s) + 1.5 (q3 - q1)`` from the quartiles of each group's ``s``
  (``q``-quantile = the sorted value at index ``floor(q (n - 1))``); result ``base +
  (x - base) [s >= threshold]``. mergekit estimates the quartiles from a random sample
  of 1,000,000 entries when a tensor is larger; here they are exact for every size.
* ``passthrough(x; scale)``: ``scale * x`` (``x`` itself for scale 1).
"""

from __future__ import annotations

import torch

from darwinmerge.merge.methods import implement_plain
from darwinmerge.merge.ops.groups import by_group, check_inputs, compute_dtype

__all__ = ["arcee_fusion", "nearswap", "passthrough"]

_QUARTILES = (0.25, 0.5, 0.75)


def nearswap(
    base: torch.Tensor,
    x: torch.Tensor,
    *,
    t: float,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``w x + (1 - w) base``, ``w = clamp(t / |base - x|, 0, 1)`` per entry."""
    check_inputs([x], group_dims, base=base)
    dtype = compute_dtype(base)
    a, b = base.to(dtype), x.to(dtype)
    weight = (t / (a - b).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return (weight * b + (1 - weight) * a).to(out_dtype or base.dtype)


def _quantiles(scores: torch.Tensor) -> list[torch.Tensor]:
    """The quartiles of each row of ``[G, n]`` (sorted value at ``floor(q (n - 1))``)."""
    n = scores.shape[1]
    positions = (torch.tensor(_QUARTILES) * (n - 1)).long().tolist()
    return [scores.kthvalue(p + 1, dim=1, keepdim=True).values for p in positions]


def arcee_fusion(
    base: torch.Tensor,
    x: torch.Tensor,
    *,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``base + (x - base)`` on the entries of outlying importance of each group."""
    check_inputs([x], group_dims, base=base)
    dtype = compute_dtype(base)
    a = by_group(base.to(dtype), group_dims)
    b = by_group(x.to(dtype), group_dims)
    if a.dim() == 1:  # groups of one entry: a softmax over one value
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    p = torch.softmax(b, dim=-1) + 1e-8
    q = torch.softmax(a, dim=-1) + 1e-8
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    importance = ((b - a).abs() * kl).flatten(1)  # [G, n]
    q1, median, q3 = _quantiles(importance)
    threshold = median + 1.5 * (q3 - q1)
    keep = (importance >= threshold).to(dtype).view(a.shape)
    return (a + (b - a) * keep).reshape(base.shape).to(out_dtype or base.dtype)


def passthrough(
    x: torch.Tensor,
    *,
    scale: float = 1.0,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``scale * x`` (a copy of ``x`` for scale 1)."""
    check_inputs([x], group_dims)
    if scale == 1.0:
        return x.to(out_dtype or x.dtype, copy=True)
    return (x.to(compute_dtype(x)) * scale).to(out_dtype or x.dtype)


# ---- attached to the declarations (merge/methods.py) ----------------------------------

implement_plain(
    "nearswap", lambda xs, base, mp, p, g: nearswap(base, xs[0], t=float(p["t"]), group_dims=g)
)
implement_plain("arcee_fusion", lambda xs, base, mp, p, g: arcee_fusion(base, xs[0], group_dims=g))
implement_plain(
    "passthrough",
    lambda xs, base, mp, p, g: passthrough(xs[0], scale=float(mp[0]["scale"]), group_dims=g),
)
