"""The fast Bernoulli draw is torch.bernoulli's draw: same mask, same generator state after
(so DARE / DELLA masks, and their parity with mergekit's, are unchanged)."""

from __future__ import annotations

import pytest
import torch

from darwinmerge.merge.ops.sparsify import bernoulli_draw


@pytest.mark.parametrize("n", [1, 7, 16, 17, 1000, 4097, 131073])
@pytest.mark.parametrize("p", [1e-3, 0.1, 0.3, 0.5, 0.7, 0.99])
def test_same_mask_and_state_as_torch_bernoulli(n, p):
    probs = torch.full((n,), p, dtype=torch.float32)
    g1, g2 = torch.Generator().manual_seed(n), torch.Generator().manual_seed(n)
    want = torch.bernoulli(probs, generator=g1)
    got = bernoulli_draw(probs, g2)
    assert got.dtype == want.dtype and torch.equal(got, want)
    # the generators stand at the same place: the next draws agree too
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_per_element_probabilities_like_della():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(64, 300, generator=g)
    want = torch.bernoulli(probs, generator=torch.Generator().manual_seed(9))
    got = bernoulli_draw(probs, torch.Generator().manual_seed(9))
    assert torch.equal(got, want)
    assert 0.4 < float(got.mean()) < 0.6  # a real draw, not all ones or zeros


def test_float64_probabilities_keep_torch_bernoulli():
    probs = torch.full((1000,), 0.5, dtype=torch.float64)
    want = torch.bernoulli(probs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(bernoulli_draw(probs, torch.Generator().manual_seed(1)), want)
