"""linear and slerp: endpoints, lerp fallback, norm preservation, weighted mean."""

from __future__ import annotations

import math

import pytest
import torch

from darwinmerge.merge.ops import apply_method, linear, slerp


def _pair(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(8, 16, generator=g).to(dtype), torch.randn(8, 16, generator=g).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_slerp_endpoints_are_exact(dtype: torch.dtype) -> None:
    a, b = _pair(dtype)
    assert torch.equal(slerp(a, b, t=0.0), a)
    assert torch.equal(slerp(a, b, t=1.0), b)
    fused_a = torch.stack([a, b]).view(2, 2, 4, 16)
    fused_b = torch.stack([b, a]).view(2, 2, 4, 16)
    assert torch.equal(slerp(fused_a, fused_b, t=0.0, group_dims=2), fused_a)
    assert torch.equal(slerp(fused_a, fused_b, t=1.0, group_dims=2), fused_b)


def test_slerp_of_nearly_colinear_vectors_is_lerp() -> None:
    a, _ = _pair()
    b = 2.5 * a + 1e-4 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    out = slerp(a, b, t=0.3)
    torch.testing.assert_close(out, 0.7 * a + 0.3 * b, rtol=1e-6, atol=1e-6)
    anti = -a  # antipodal: |cos| = 1 also falls back to lerp (no division by sin(pi))
    torch.testing.assert_close(slerp(a, anti, t=0.25), 0.75 * a + 0.25 * anti)


def test_slerp_keeps_unit_norm_between_orthogonal_unit_vectors() -> None:
    a = torch.zeros(64)
    b = torch.zeros(64)
    a[3], b[10] = 1.0, 1.0
    mid = slerp(a, b, t=0.5)
    assert torch.linalg.vector_norm(mid).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mid, (a + b) / math.sqrt(2))
    quarter = slerp(a, b, t=1 / 3)  # 30 degrees from a
    assert quarter[3].item() == pytest.approx(math.cos(math.pi / 6), abs=1e-6)
    assert quarter[10].item() == pytest.approx(math.sin(math.pi / 6), abs=1e-6)


def test_slerp_angle_is_per_group() -> None:
    # group 0 colinear (lerp), group 1 orthogonal (true slerp): one fused call does both
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    out = slerp(a, b, t=0.5, group_dims=1)
    torch.testing.assert_close(out[0], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    whole = slerp(a, b, t=0.5)  # one angle over the whole tensor gives something else
    assert not torch.allclose(whole, out)


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_is_the_weighted_mean(normalize: bool) -> None:
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(5, 7, generator=g) for _ in range(3)]
    w = [0.5, 1.5, -0.25]
    expected = sum(wi * x for wi, x in zip(w, xs, strict=True))
    assert isinstance(expected, torch.Tensor)
    if normalize:
        expected = expected / sum(w)
    out = apply_method(
        "linear", xs, model_params=[{"weight": v} for v in w], params={"normalize": normalize}
    )
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(linear([xs[0]], weights=[3.0]), xs[0])  # one model, normalised


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_model_fast_path_equals_reference_path(dtype):
    """The fused lerp path for two normalised weights equals the float32 weighted sum
    rounded once (bf16: at most one ulp apart, almost always identical)."""
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(257, 129, generator=gen).to(dtype)
    b = torch.randn(257, 129, generator=gen).to(dtype)
    fast = linear([a, b], weights=[0.3, 0.7])
    ref = (0.3 * a.double() + 0.7 * b.double()).to(dtype)
    assert fast.dtype == dtype
    if dtype == torch.float32:
        assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-6)
    else:
        ulp = torch.finfo(dtype).eps * ref.float().abs().clamp_min(1e-3)
        assert bool(((fast.float() - ref.float()).abs() <= ulp).all())
        assert (fast == ref).float().mean() > 0.99
    # the general path (three models, one with weight 0) agrees
    general = linear([a, b, a], weights=[0.3, 0.7, 0.0])
    assert torch.allclose(fast.float(), general.float(), atol=float(torch.finfo(dtype).eps) * 8)
