"""rank_window_mask equals a stable-argsort reference, ties included."""

from __future__ import annotations

import pytest
import torch

from darwinmerge.merge.ops import rank_window_mask
from darwinmerge.merge.ops.selection import kth_smallest


def _reference(w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    order = torch.argsort(w, dim=-1, stable=True)
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask.scatter_(-1, order[:, lo:hi], True)
    return mask


@pytest.mark.parametrize(("lo", "hi"), [(0, 5), (7, 40), (30, 64), (0, 64), (10, 10), (63, 64)])
@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize(
    ("rows", "dtype"),
    [(6, torch.float32), (1, torch.float32), (70, torch.float32), (6, torch.float64)],
)  # radix select (float32, <= 64 rows) and the torch.kthvalue path
def test_rank_window_matches_stable_sort(
    lo: int, hi: int, levels: int | None, rows: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(lo * 100 + hi)
    w = torch.rand(rows, 64, generator=g, dtype=dtype)
    if levels is not None:  # heavy ties, as in bfloat16 magnitudes
        w = torch.floor(w * levels)
    mask = rank_window_mask(w, lo, hi)
    assert torch.equal(mask, _reference(w, lo, hi))
    assert (mask.sum(dim=-1) == hi - lo).all()


def test_radix_select_matches_sort_across_magnitudes() -> None:
    g = torch.Generator().manual_seed(9)
    w = (torch.randn(3, 50000, generator=g) * 12).exp()  # spans many binades
    w[:, :500] = 0.0  # exact zeros
    w[1, 1000:3000] = w[1, 5000]  # a big tie
    w[2] = w[2].to(torch.bfloat16).float()  # heavily quantised row
    ordered = w.sort(dim=1).values
    for k0 in (0, 499, 500, 1234, 25000, 49999):
        value, below, equal = kth_smallest(w, k0)
        assert torch.equal(value.view(-1), ordered[:, k0])
        assert torch.equal(below.view(-1), (w < value).sum(dim=1))
        assert torch.equal(equal.view(-1), (w == value).sum(dim=1))
