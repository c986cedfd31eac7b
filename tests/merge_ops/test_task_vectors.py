"""Task-vector methods: formulas, TIES density and sign election, DARE, breadcrumbs, DELLA."""

from __future__ import annotations

import math

import pytest
import torch

from darwinmerge.merge.ops import (
    apply_method,
    dare_linear,
    della_probabilities,
    task_arithmetic,
    ties,
)
from darwinmerge.merge.ops.sparsify import della_mask


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic_formula(normalize: bool) -> None:
    base = _randn(6, 9, seed=0)
    xs = [_randn(6, 9, seed=s) for s in (1, 2, 3)]
    w, lam = [0.6, 0.3, -0.2], 0.8
    mixed = sum(wi * (x - base) for wi, x in zip(w, xs, strict=True))
    assert isinstance(mixed, torch.Tensor)
    if normalize:
        mixed = mixed / sum(w)
    out = apply_method(
        "task_arithmetic",
        xs,
        base=base,
        model_params=[{"weight": v} for v in w],
        params={"lambda": lam, "normalize": normalize},
    )
    torch.testing.assert_close(out, base + lam * mixed, rtol=1e-6, atol=1e-6)


def test_ties_sign_election_hand_example() -> None:
    base = torch.zeros(5)
    m0 = torch.tensor([2.0, -1.0, 1.0, 0.5, 1.0])
    m1 = torch.tensor([-1.0, -2.0, 3.0, -0.5, -1.0])
    m2 = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0])
    xs = [m0, m1, m2]
    # column 4: the sum is 0, so "+" is elected and only m0 (a nonzero +) counts
    out = ties(xs, base=base, weights=[1.0, 1.0, 1.0], densities=[1.0, 1.0, 1.0])
    assert torch.equal(out, torch.tensor([1.5, -1.5, 2.0, -0.75, 1.0]))
    raw = ties(xs, base=base, weights=[1.0, 1.0, 1.0], densities=[1.0] * 3, normalize=False)
    assert torch.equal(raw, torch.tensor([3.0, -3.0, 4.0, -1.5, 1.0]))
    weighted = ties(xs, base=base, weights=[1.0, 2.0, 1.0], densities=[1.0] * 3)
    # weighted deltas column 1: -1, -4, +1 -> "-" elected, (-1 - 4) / (1 + 2)
    torch.testing.assert_close(weighted[1], torch.tensor(-5.0 / 3.0))
    torch.testing.assert_close(weighted[0], torch.tensor(1.5))  # 2 - 2 + 1 > 0: keeps 2 and 1


@pytest.mark.parametrize(("density", "k"), [(0.3, 15), (0.299, 14), (0.001, 1), (1.0, 50)])
def test_ties_keeps_the_asked_density_per_group(density: float, k: int) -> None:
    base = _randn(4, 50, seed=1)
    delta = _randn(4, 50, seed=2) * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    out = ties([base + delta], base=base, weights=[1.0], densities=[density], group_dims=1)
    kept = (out - base) != 0
    assert kept.sum(dim=1).tolist() == [k] * 4  # per group, despite very different scales
    top = delta.abs().topk(k, dim=1).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter_(1, top, True))
    torch.testing.assert_close((out - base)[kept], delta[kept])


def test_ties_density_is_exact_with_tied_magnitudes() -> None:
    base = torch.zeros(3, 40)
    delta = torch.floor(_randn(3, 40, seed=3) * 2) / 2  # many equal magnitudes
    out = ties([delta], base=base, weights=[1.0], densities=[0.25], group_dims=1)
    assert (delta != 0).sum(dim=1).min() > 10  # the top 10 are all nonzero
    assert (out != 0).sum(dim=1).tolist() == [10, 10, 10]


def test_dare_keeps_density_and_rescales_kept_entries() -> None:
    density, n = 0.3, 20000
    base = torch.zeros(4, n)  # exact deltas, so the ratio test can be tight
    delta = _randn(4, n, seed=5) * torch.tensor([[1.0], [5.0], [0.2], [2.0]])
    g = torch.Generator().manual_seed(11)
    out = dare_linear(
        [base + delta], base=base, weights=[1.0], densities=[density], group_dims=1, generator=g
    )
    moved = out - base
    kept = moved != 0
    bound = 5 * math.sqrt(density * (1 - density) / n)
    for row in range(4):
        fraction = kept[row].float().mean().item()
        assert abs(fraction - density) < bound
        factor = delta[row].abs().sum() / delta[row][kept[row]].abs().sum()  # L1 match
        ratio = moved[row][kept[row]] / delta[row][kept[row]]
        torch.testing.assert_close(ratio, factor.expand_as(ratio), rtol=2e-5, atol=0)
        assert abs(factor.item() - 1 / density) < 0.05 / density
    plain = dare_linear(
        [base + delta],
        base=base,
        weights=[1.0],
        densities=[density],
        rescale=False,
        generator=torch.Generator().manual_seed(11),
        group_dims=1,
    )
    assert torch.equal(plain != base, kept)
    torch.testing.assert_close((plain - base)[kept], delta[kept], rtol=1e-6, atol=1e-6)


def test_breadcrumbs_drops_smallest_and_outliers() -> None:
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(6))
    signs = torch.where(torch.arange(100) % 3 == 0, -1.0, 1.0)
    delta = (perm.float() + 1) * signs  # magnitudes 1..100
    base = torch.zeros(100)

    def kept_magnitudes(density: float, gamma: float | None) -> set[int]:
        mp: dict[str, float] = {"weight": 1.0, "density": density}
        if gamma is not None:
            mp["gamma"] = gamma
        out = apply_method("breadcrumbs", [delta], base=base, model_params=[mp])
        torch.testing.assert_close(out[out != 0], delta[out != 0])
        return {int(v) for v in out[out != 0].abs().tolist()}

    assert kept_magnitudes(0.5, 0.1) == set(range(41, 91))  # ranks [40, 90)
    assert kept_magnitudes(0.95, 0.1) == set(range(1, 96))  # n_bot clipped at 0
    assert kept_magnitudes(0.5, None) == set(range(50, 100))  # default gamma 0.01


def test_della_probabilities_follow_magnitude_ranks() -> None:
    row = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2])
    probs = della_probabilities(torch.stack([row, -row]), 0, density=0.5, epsilon=0.1)
    expected = torch.tensor([0.4, 0.6, 0.5, 0.55, 0.45])
    torch.testing.assert_close(probs, torch.stack([expected, expected]))
    flat = della_probabilities(row, 0, density=0.5, epsilon=0.1)  # 1-D: rank the whole vector
    torch.testing.assert_close(flat, expected)
    # a [E, rows, cols] tensor with group_dims=1 ranks within each row of each expert
    cube = torch.stack([torch.stack([row, 2 * row]), torch.stack([-row, row])])
    torch.testing.assert_close(della_probabilities(cube, 1, 0.5, 0.1), expected.expand(2, 2, 5))


def test_della_mask_rate_matches_probabilities() -> None:
    delta = _randn(200, 1000, seed=7)
    g = torch.Generator().manual_seed(3)
    masks = torch.stack([della_mask(delta, 0, 0.4, 0.2, g) for _ in range(5)])  # type: ignore[misc]
    ranks = delta.abs().argsort(dim=1).argsort(dim=1)
    low = masks[:, ranks < 100].mean().item()  # probs 0.2 .. 0.24
    high = masks[:, ranks >= 900].mean().item()  # probs 0.56 .. 0.6
    assert abs(low - 0.22) < 0.01
    assert abs(high - 0.58) < 0.01
    assert abs(masks.mean().item() - 0.4) < 0.005


def test_task_arithmetic_function_defaults() -> None:
    base = _randn(3, 3, seed=8)
    x = _randn(3, 3, seed=9)
    torch.testing.assert_close(
        task_arithmetic([x], base=base, weights=[0.5]), base + 0.5 * (x - base)
    )
