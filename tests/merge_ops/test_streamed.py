"""The streamed (chunked, bit-pattern radix select) task-vector path equals the reference.

The reference is :func:`generalized_task_arithmetic` with the streamed path switched off
(full-size float32 deltas, :func:`rank_window_mask`); results must be bit-identical.
Every test runs three times: with the fused Numba loops (:mod:`.fused`, bfloat16 /
float32 inputs), with them and the mix pass split over 3 threads, and with the streamed
path's torch operations only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from darwinmerge.merge.ops import fused, interpolation, streamed, task_vectors
from darwinmerge.merge.ops.interpolation import slerp
from darwinmerge.merge.ops.streamed import kth_by_bits
from darwinmerge.merge.ops.task_vectors import Sparsifier, generalized_task_arithmetic

_ABS = 0x7FFFFFFF


@pytest.fixture(autouse=True, params=[1, 3, 0], ids=["fused", "fused-3-threads", "torch-ops"])
def fused_loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """0: torch steps only; n: fused loops, mix passes split over n threads."""
    monkeypatch.setattr(fused, "ENABLED", request.param > 0)
    monkeypatch.setattr(fused, "PARALLEL_MIN", 1)
    with fused.intra_threads(max(1, request.param)):
        yield request.param


def _bits_of(mag: torch.Tensor) -> torch.Tensor:
    return mag.contiguous().view(torch.int32)


def _deltas(kind: str, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """float32 deltas as the merge computes them: float32(x) - float32(base)."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=g) * 0.02).to(dtype)
    if kind == "random":
        x = (torch.randn(n, generator=g) * 0.02).to(dtype)
    else:  # tie-heavy: a fine-tune that moved weights by a few quantisation steps
        x = (base.float() + torch.randint(-3, 4, (n,), generator=g) * 1e-3).to(dtype)
    return x.float() - base.float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_kth_by_bits_equals_kthvalue(dtype: torch.dtype, kind: str) -> None:
    n = 30000
    mag = _deltas(kind, n, dtype, seed=3).abs()
    high = (_bits_of(mag) >> 16).to(torch.int16)

    def recompute(idx: torch.Tensor) -> torch.Tensor:
        return _bits_of(mag)[idx].to(torch.int64)

    most_ties = 0
    for k0 in (0, 1, 777, n // 2, n - 2, n - 1):
        bits, below, equal_pos = kth_by_bits(high, k0, recompute)
        value = torch.tensor([bits], dtype=torch.int32).view(torch.float32)
        expected = torch.kthvalue(mag, k0 + 1).values
        assert torch.equal(value, expected.view(1))
        assert below == int((mag < expected).sum())
        assert torch.equal(equal_pos, (mag == expected).nonzero().view(-1))
        assert below <= k0 < below + equal_pos.numel()
        most_ties = max(most_ties, equal_pos.numel())
    if kind == "ties":  # the case the tie handling exists for
        assert most_ties > 1000


def _reference(fn: Callable[[], torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(task_vectors, "_streamable", lambda *args: False)
        return fn()


CASES = [
    # sparsifier, consensus, normalize, shape, group_dims, models, kind, dtype
    (Sparsifier.magnitude, True, True, (96, 700), 0, 2, "random", torch.bfloat16),
    (Sparsifier.magnitude, True, True, (96, 700), 0, 2, "ties", torch.bfloat16),
    (Sparsifier.magnitude, True, True, (96, 700), 0, 3, "ties", torch.float16),
    (Sparsifier.magnitude, True, False, (96, 700), 0, 2, "random", torch.float32),
    (Sparsifier.magnitude, True, True, (6, 2, 40, 128), 2, 3, "ties", torch.bfloat16),
    (Sparsifier.magnitude, False, False, (4, 64, 300), 1, 2, "ties", torch.bfloat16),
    (Sparsifier.outliers, False, False, (96, 700), 0, 2, "ties", torch.bfloat16),
    (Sparsifier.outliers, True, False, (5, 60, 100), 1, 3, "random", torch.float32),
    (Sparsifier.none, False, True, (96, 700), 0, 3, "random", torch.bfloat16),
]


@pytest.mark.parametrize("span", [1 << 40, 3 * 700])  # all groups at once / 3 at a time
@pytest.mark.parametrize("high_buffer", [1 << 40, 0])  # int16 buffer / members re-walked
@pytest.mark.parametrize("chunk", [1 << 12, 1 << 20])  # row pieces / many whole rows
@pytest.mark.parametrize(
    ("sparsifier", "consensus", "normalize", "shape", "group_dims", "models", "kind", "dtype"),
    CASES,
)
def test_streamed_equals_reference(
    monkeypatch: pytest.MonkeyPatch,
    span: int,
    high_buffer: int,
    chunk: int,
    sparsifier: Sparsifier,
    consensus: bool,
    normalize: bool,
    shape: tuple[int, ...],
    group_dims: int,
    models: int,
    kind: str,
    dtype: torch.dtype,
) -> None:
    monkeypatch.setattr(streamed, "CHUNK", chunk)
    monkeypatch.setattr(streamed, "MIN_GROUP", 1)
    monkeypatch.setattr(streamed, "HIGH_BUFFER_BYTES", high_buffer)
    monkeypatch.setattr(streamed, "SPAN_ELEMENTS", span)
    g = torch.Generator().manual_seed(len(shape) * 10 + models)
    base = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    if kind == "random":
        xs = [(torch.randn(shape, generator=g) * 0.02).to(dtype) for _ in range(models)]
    else:
        xs = [
            (base.float() + torch.randint(-2, 3, shape, generator=g) * 2e-3).to(dtype)
            for _ in range(models)
        ]
    kwargs = dict(
        base=base,
        weights=[0.7, -0.4, 1.0][:models],
        densities=[0.5, 0.31, 0.9][:models],
        gammas=[0.05] * models,
        sparsifier=sparsifier,
        consensus=consensus,
        normalize=normalize,
        lambda_=0.8,
        group_dims=group_dims,
    )
    assert task_vectors._streamable(sparsifier, base, xs, group_dims, torch.float32, False, None)
    fast = generalized_task_arithmetic(xs, **kwargs)
    ref = _reference(lambda: generalized_task_arithmetic(xs, **kwargs), monkeypatch)
    assert fast.dtype == ref.dtype == dtype
    assert torch.equal(fast, ref)
    assert not torch.equal(fast, base)  # the merge did something


@pytest.mark.parametrize("high_buffer", [1 << 40, 0])
def test_a_one_entry_window_keeps_one_entry_per_group(
    monkeypatch: pytest.MonkeyPatch, high_buffer: int
) -> None:
    """Breadcrumbs with density 1/700 and gamma 0.05: the kept window is one rank wide,
    so its lower and upper bounds are the same rank (both select the same bucket)."""
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    monkeypatch.setattr(streamed, "HIGH_BUFFER_BYTES", high_buffer)
    g = torch.Generator().manual_seed(8)
    base = torch.zeros(6, 700)
    x = (base + torch.randint(-3, 4, (6, 700), generator=g) * 1e-3).to(torch.bfloat16).float()
    kwargs = dict(
        base=base, weights=[1.0], densities=[0.0015], gammas=[0.05],
        sparsifier=Sparsifier.outliers, group_dims=1,
    )  # fmt: skip
    fast = generalized_task_arithmetic([x], **kwargs)
    ref = _reference(lambda: generalized_task_arithmetic([x], **kwargs), monkeypatch)
    assert torch.equal(fast, ref)
    assert ((fast != 0).sum(dim=1) == 1).all()


def test_streamed_ties_keeps_exactly_k_with_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """One model, weight 1: the kept entries are the top-k ascending ranks of |delta|, equal
    magnitudes ranked by flat index (so among tied entries the later ones are kept)."""
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    n = 50000
    g = torch.Generator().manual_seed(5)
    base = torch.zeros(n)
    x = torch.randint(1, 4, (n,), generator=g).float()  # magnitudes 1, 2, 3: huge ties
    out = generalized_task_arithmetic(
        [x],
        base=base,
        weights=[1.0],
        densities=[0.5],
        sparsifier=Sparsifier.magnitude,
        consensus=True,
        normalize=True,
    )
    k = n // 2
    kept = out != 0
    assert int(kept.sum()) == k
    order = torch.argsort(x, stable=True)  # ascending, ties: lower index first
    expected = torch.zeros(n, dtype=torch.bool)
    expected[order[n - k :]] = True
    assert torch.equal(kept, expected)
    assert torch.equal(out[kept], x[kept])


def test_fallbacks_are_not_streamed() -> None:
    base = torch.zeros(8192)
    xs = [torch.ones(8192)]
    f32 = torch.float32
    assert not task_vectors._streamable(Sparsifier.magnitude, base, xs, 0, f32, True, None)
    assert not task_vectors._streamable(Sparsifier.random, base, xs, 0, f32, False, None)
    assert not task_vectors._streamable(
        Sparsifier.magnitude, base.double(), xs, 0, torch.float64, False, None
    )
    assert not task_vectors._streamable(Sparsifier.magnitude, base, xs, 0, f32, False, [None])
    assert task_vectors._streamable(Sparsifier.none, base, xs, 0, f32, True, None)


@pytest.mark.parametrize("chunk", [1 << 12, 1 << 20])
@pytest.mark.parametrize(
    ("consensus", "rescale", "shape", "group_dims", "dtype"),
    [
        (True, True, (96, 700), 0, torch.float32),
        (True, True, (6, 2, 40, 128), 2, torch.float32),
        (False, True, (4, 64, 300), 1, torch.float32),
        (True, False, (96, 700), 0, torch.bfloat16),
        (False, False, (6, 2, 40, 128), 2, torch.bfloat16),
    ],
)
def test_streamed_dare_equals_reference(
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    consensus: bool,
    rescale: bool,
    shape: tuple[int, ...],
    group_dims: int,
    dtype: torch.dtype,
) -> None:
    """Same Bernoulli stream as whole-tensor draws; L1 sums are chunked, so with rescale
    the factors (hence results) agree to float32 rounding, without it bit for bit."""
    monkeypatch.setattr(streamed, "CHUNK", chunk)
    monkeypatch.setattr(streamed, "MIN_GROUP", 1)
    g = torch.Generator().manual_seed(11)
    base = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    xs = [(torch.randn(shape, generator=g) * 0.02).to(dtype) for _ in range(3)]

    def merge() -> torch.Tensor:
        return generalized_task_arithmetic(
            xs,
            base=base,
            weights=[0.6, 0.3, -0.2],
            densities=[0.4, 1.0, 0.7],
            sparsifier=Sparsifier.random,
            consensus=consensus,
            normalize=consensus,
            rescale=rescale,
            group_dims=group_dims,
            generator=torch.Generator().manual_seed(7),
        )

    fast = merge()
    ref = _reference(merge, monkeypatch)
    assert fast.dtype == ref.dtype == dtype
    if rescale:
        torch.testing.assert_close(fast, ref, rtol=2e-6, atol=1e-7)
    else:
        assert torch.equal(fast, ref)


def test_streamed_dare_draws_the_reference_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    shape = (8, 5000)
    base = torch.zeros(shape)
    xs = [torch.ones(shape), torch.full(shape, 2.0)]
    out = generalized_task_arithmetic(
        xs,
        base=base,
        weights=[1.0, 1.0],
        densities=[0.3, 0.6],
        sparsifier=Sparsifier.random,
        generator=torch.Generator().manual_seed(4),
    )
    masks = task_vectors.draw_masks(
        Sparsifier.random,
        xs,
        base=base,
        densities=[0.3, 0.6],
        generator=torch.Generator().manual_seed(4),
    )
    assert masks[0] is not None and masks[1] is not None
    assert torch.equal(out, masks[0] + 2 * masks[1])
    assert abs(float(masks[0].mean()) - 0.3) < 0.01


@pytest.mark.parametrize("chunk", [1 << 12, 1 << 20])
@pytest.mark.parametrize(
    ("shape", "group_dims", "dtype"),
    [
        ((96, 700), 0, torch.bfloat16),
        ((6, 2, 40, 128), 2, torch.float32),
        ((5, 9000), 1, torch.float16),
    ],
)
def test_streamed_slerp_equals_reference(
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    shape: tuple[int, ...],
    group_dims: int,
    dtype: torch.dtype,
) -> None:
    """Norms and dot are summed in chunks (float64), so coefficients agree with the
    whole-tensor reference to float32 rounding; t=0 and t=1 stay exact."""
    monkeypatch.setattr(streamed, "CHUNK", chunk)
    monkeypatch.setattr(interpolation, "MIN_GROUP", 1)
    g = torch.Generator().manual_seed(2)
    a = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    b = (0.6 * a.float() + 0.01 * torch.randn(shape, generator=g)).to(dtype)
    fast = slerp(a, b, t=0.3, group_dims=group_dims, out_dtype=torch.float32)
    with monkeypatch.context() as m:
        m.setattr(interpolation, "MIN_GROUP", 1 << 60)
        ref = slerp(a, b, t=0.3, group_dims=group_dims, out_dtype=torch.float32)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(fast, torch.lerp(a.float(), b.float(), 0.3), rtol=1e-4, atol=0)
    assert torch.equal(slerp(a, b, t=0.0, group_dims=group_dims), a)
    assert torch.equal(slerp(a, b, t=1.0, group_dims=group_dims), b)
