"""trimmed_lerp / trimmed_task_lerp: the seed genome's density genes as a merge method."""

from __future__ import annotations

import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge.ops import apply_method, trimmed_lerp, trimmed_task_lerp

E, INNER, H = 4, 6, 10  # fused [E, INNER, H]: one group per expert with group_dims=1


def _parents(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    scale = (3.0 ** torch.arange(E, dtype=torch.float32)).view(E, 1, 1)  # experts differ
    base = torch.randn(E, INNER, H, generator=g)
    a = base + scale * torch.randn(E, INNER, H, generator=g)
    b = base + scale * torch.randn(E, INNER, H, generator=g)
    return a.to(dtype), b.to(dtype), base.to(dtype)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_density_one_is_lerp_exactly(t: float) -> None:
    a, b, base = _parents()
    expected = torch.lerp(a, b, t)
    assert torch.equal(trimmed_lerp(a, b, t=t, group_dims=1), expected)
    assert torch.equal(trimmed_task_lerp(a, b, base=base, t=t, group_dims=1), expected)
    via_registry = apply_method(
        "trimmed_lerp", [a, b], model_params=[{"density": 1.0}] * 2, params={"t": t}
    )
    assert torch.equal(via_registry, expected)


def test_keeps_exactly_the_asked_fraction_per_expert() -> None:
    a, b, _ = _parents()
    n = INNER * H
    for density in (0.1, 0.25, 0.5, 0.9):
        # t = 1, d_a = 1: child - (A + B)/2 = K_b(B - A) / 2, non-zero exactly where kept
        out = trimmed_lerp(a, b, t=1.0, density_a=1.0, density_b=density, group_dims=1)
        moved = (out - (a + b) / 2).reshape(E, -1)
        kept = (moved.abs() > 1e-6 * (b - a).abs().max()).sum(dim=1)
        assert kept.tolist() == [max(1, int(density * n))] * E
        # and the kept entries are each expert's largest |B - A|
        diff = (b - a).reshape(E, -1).abs()
        for e in range(E):
            k = int(kept[e])
            top = set(torch.topk(diff[e], k).indices.tolist())
            assert set(torch.nonzero(moved[e]).flatten().tolist()) == top
            torch.testing.assert_close(
                moved[e][list(top)], ((b - a).reshape(E, -1)[e][list(top)]) / 2
            )


def test_per_expert_statistics_differ_from_whole_tensor() -> None:
    a, b, _ = _parents()
    fused = trimmed_lerp(a, b, t=0.8, density_a=0.5, density_b=0.3, group_dims=1)
    whole = trimmed_lerp(a, b, t=0.8, density_a=0.5, density_b=0.3, group_dims=0)
    for e in range(E):
        one = trimmed_lerp(a[e], b[e], t=0.8, density_a=0.5, density_b=0.3)
        torch.testing.assert_close(fused[e], one)
    # experts have different scales: one global top-k keeps mostly the largest expert
    assert not torch.allclose(fused, whole)


def test_equal_densities_closed_form() -> None:
    a, b, _ = _parents()
    d, t = 0.4, 0.7
    out = trimmed_lerp(a, b, t=t, density_a=d, density_b=d, group_dims=1)
    diff = (b - a).reshape(E, -1)
    k = int(d * INNER * H)
    thresh = torch.topk(diff.abs(), k, dim=1).values[:, -1:]
    kd = torch.where(diff.abs() >= thresh, diff, torch.zeros_like(diff)).view(E, INNER, H)
    torch.testing.assert_close(out, (a + b) / 2 + (t - 0.5) * kd, rtol=1e-6, atol=1e-6)


def test_task_variant_trims_each_task_vector() -> None:
    a, b, base = _parents()
    t, da, db = 0.6, 0.3, 0.8
    out = trimmed_task_lerp(a, b, base=base, t=t, density_a=da, density_b=db, group_dims=1)
    n = INNER * H

    def trim(x: torch.Tensor, d: float) -> torch.Tensor:
        x2 = x.reshape(E, -1)
        k = max(1, int(d * n))
        idx = torch.topk(x2.abs(), k, dim=1).indices
        return torch.zeros_like(x2).scatter_(1, idx, x2.gather(1, idx)).view_as(x)

    expected = base + (1 - t) * trim(a - base, da) + t * trim(b - base, db)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_a_density_change_changes_the_child() -> None:
    a, b, base = _parents()
    one = trimmed_lerp(a, b, t=0.6, density_a=0.8, density_b=0.8, group_dims=1)
    other = trimmed_lerp(a, b, t=0.6, density_a=0.8, density_b=0.6, group_dims=1)
    assert (one - other).abs().max() > 0.01 * (b - a).abs().max()
    lo = trimmed_task_lerp(a, b, base=base, t=0.6, density_a=0.8, density_b=0.5)
    hi = trimmed_task_lerp(a, b, base=base, t=0.6, density_a=0.8, density_b=0.9)
    assert (lo - hi).abs().max() > 0.01 * (b - base).abs().max()


def test_dtype_follows_a_and_bad_values_are_config_errors() -> None:
    a, b, _ = _parents(torch.bfloat16)
    out = trimmed_lerp(a, b, t=0.5, density_a=0.5, density_b=0.5, group_dims=1)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="density_b"):
        trimmed_lerp(a, b, t=0.5, density_b=0.0)
    with pytest.raises(ConfigError, match="exactly 2"):
        apply_method("trimmed_lerp", [a, b, a], params={"t": 0.5})
    with pytest.raises(ConfigError, match="needs a base"):
        apply_method("trimmed_task_lerp", [a, b], params={"t": 0.5})
