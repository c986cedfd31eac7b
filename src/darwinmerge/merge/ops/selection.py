"""Exact rank-window selection per group, without a full sort.

``rank_window_mask(w, lo, hi)`` keeps, in every row of ``w`` (one row per group; ``w``
holds magnitudes, ``>= 0``), the entries whose ascending rank lies in ``[lo, hi)``. Equal
values are ordered by their flat index, so exactly ``hi - lo`` entries are kept per row
even when magnitudes tie (common in bfloat16-derived deltas).

Thresholds (k-th smallest values) for float32 come from a two-pass radix select: the bit
pattern of a non-negative float32 orders like the float, so a 65536-bin histogram of
the top 16 bits finds the bucket holding rank k and a second histogram of the low 16
bits of that bucket's few members finds the exact value. That is O(n) with two cheap
passes, about 6x faster than ``torch.kthvalue`` on 16M entries on one thread (and far
faster than mergekit's full ``argsort``). float64, and more than 64 groups (where the
histograms would grow large), use ``torch.kthvalue``. A cumsum over
tied entries is only paid for when a row really has ties at a threshold.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["kth_smallest", "rank_window_mask"]

_BINS = 1 << 16
# histograms cost groups * 65536 counters; above this many groups use torch.kthvalue
_RADIX_MAX_GROUPS = 64


def _radix_kth(w: torch.Tensor, k0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Radix select on non-negative float32 rows: (value, #below, #equal), each [G, 1]."""
    w = w.contiguous()
    groups = w.shape[0]
    keys = w.view(torch.int32)
    if sys.byteorder == "little":  # the high half-word of each float, without a shift pass
        high = w.view(torch.int16)[:, 1::2]
    else:
        high = keys >> 16
    if groups > 1:
        offsets = torch.arange(groups, device=w.device, dtype=torch.int32).mul_(_BINS)
        flat_high = (high + offsets.view(-1, 1)).view(-1)
    else:
        flat_high = high.reshape(-1)
    counts = torch.bincount(flat_high, minlength=groups * _BINS).view(groups, _BINS)
    del flat_high
    cumulative = counts.cumsum_(dim=1)
    target = torch.full((groups, 1), k0, dtype=cumulative.dtype, device=w.device)
    bucket = torch.searchsorted(cumulative, target, right=True)  # first bin with cum > k0
    below_bucket = cumulative.gather(1, (bucket - 1).clamp_(min=0)).masked_fill_(bucket == 0, 0)
    rows, cols = (high == bucket.to(high.dtype)).nonzero(as_tuple=True)
    del high
    low = (keys[rows, cols] & 0xFFFF).to(torch.int64).add_(rows * _BINS)
    counts = torch.bincount(low, minlength=groups * _BINS).view(groups, _BINS)
    cumulative = counts.cumsum(dim=1)
    low_bin = torch.searchsorted(cumulative, target - below_bucket, right=True)
    equal = counts.gather(1, low_bin)
    below = below_bucket + cumulative.gather(1, low_bin) - equal
    value = ((bucket << 16) | low_bin).to(torch.int32).view(torch.float32)
    return value, below, equal


def kth_smallest(w: torch.Tensor, k0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact ``k0``-th (0-based) smallest of each row of magnitudes ``w`` (>= 0).

    Returns ``(value, below, equal)``, each ``[G, 1]``: the value, how many entries of
    the row are smaller, and how many equal it.
    """
    if w.dtype == torch.float32 and w.shape[0] <= _RADIX_MAX_GROUPS:
        return _radix_kth(w, k0)
    value = torch.kthvalue(w, k0 + 1, dim=-1, keepdim=True).values
    below = (w < value).sum(dim=-1, keepdim=True)
    equal = (w == value).sum(dim=-1, keepdim=True)
    return value, below, equal


def _add_ties(
    w: torch.Tensor,
    threshold: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    lo: int,
    hi: int,
    mask: torch.Tensor,
) -> None:
    """Add to ``mask`` the entries equal to the threshold whose tie-broken rank is in [lo, hi).

    The j-th (flat order) of a row's entries equal to the value has rank ``below + j``.
    """
    value, below, equal = threshold
    if bool((equal == 1).all()):
        # the single entry equal to a k-th value has rank k, which is inside the window
        mask |= w == value
        return
    rows, cols = (w == value).nonzero(as_tuple=True)  # row-major: rows sorted, cols ascending
    starts = torch.cumsum(equal.view(-1), dim=0) - equal.view(-1)
    rank = below.view(-1)[rows] + torch.arange(rows.numel(), device=w.device) - starts[rows]
    keep = (rank >= lo) & (rank < hi)
    mask[rows[keep], cols[keep]] = True


def rank_window_mask(w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Boolean mask of the entries of each row of 2-D ``w`` with rank in ``[lo, hi)``."""
    if w.ndim != 2:
        raise ValueError(f"rank_window_mask expects [groups, n], got {tuple(w.shape)}")
    n = w.shape[1]
    lo, hi = max(0, lo), min(n, hi)
    if hi <= lo:
        return torch.zeros_like(w, dtype=torch.bool)
    if lo == 0 and hi == n:
        return torch.ones_like(w, dtype=torch.bool)
    lower = kth_smallest(w, lo) if lo > 0 else None
    upper = kth_smallest(w, hi - 1) if hi < n else None
    if lower is not None and upper is not None:
        mask = (w > lower[0]) & (w < upper[0])
    elif lower is not None:
        mask = w > lower[0]
    elif upper is not None:
        mask = w < upper[0]
    for threshold in (lower, upper):
        if threshold is not None:
            _add_ties(w, threshold, lo, hi, mask)
    return mask
