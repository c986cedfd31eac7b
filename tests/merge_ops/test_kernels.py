"""Every kernel equals its reference (the shared suite over ``KERNELS``).

* :func:`test_every_kernel_equals_its_reference` runs every registered kernel on every
  method it implements, through :func:`run_method`, against the reference
  (:func:`apply_method`): bit-identical for an exact kernel, to float32 rounding else.
* The streamed task-vector kernel (chunked, bit-pattern radix select) against
  :func:`generalized_task_arithmetic` (full-size float32 deltas,
  :func:`rank_window_mask`) over shapes, groups, chunk sizes, both select paths, ties.

Every test runs three times (the ``ctx`` fixture): with the ``numba`` kernel's fused
loops (:mod:`darwinmerge.merge.kernels.fused`, bfloat16 / float32 inputs), with them and
the mix pass split over 3 threads, and with the streamed path's torch operations only.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import torch

from darwinmerge.merge.kernels import KERNELS, fused, run_method, streamable, streamed, streamed_gta
from darwinmerge.merge.kernels.streamed import (
    kth_by_bits,
    streamed_combine,
    streamed_slerp_coefficients,
)
from darwinmerge.merge.ops import METHODS, apply_method, prepare_call, task_vectors
from darwinmerge.merge.ops.interpolation import slerp, slerp_coefficients
from darwinmerge.merge.ops.task_vectors import Sparsifier, generalized_task_arithmetic
from darwinmerge.merge.options import KernelContext, MergeOptions

_ABS = 0x7FFFFFFF


@pytest.fixture(params=[1, 3, 0], ids=["numba", "numba-3-threads", "torch-ops"])
def ctx(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[KernelContext]:
    """0: the streamed path's torch steps only; n: the numba loops, mix passes split over
    n threads."""
    monkeypatch.setattr(fused, "PARALLEL_MIN", 1)
    options = MergeOptions(kernels={"numba": request.param > 0})
    if request.param > 0 and not fused.AVAILABLE:
        pytest.fail("numba is a dependency; the numba kernel cannot be tested without it")
    yield KernelContext(options, threads=max(1, request.param))


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


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_kth_by_bits_equals_kthvalue(dtype: torch.dtype, kind: str, compiled: bool) -> None:
    n = 30000
    mag = _deltas(kind, n, dtype, seed=3).abs()
    high = (_bits_of(mag) >> 16).to(torch.int16)

    def recompute(idx: torch.Tensor) -> torch.Tensor:
        return _bits_of(mag)[idx].to(torch.int64)

    most_ties = 0
    for k0 in (0, 1, 777, n // 2, n - 2, n - 1):
        bits, below, equal_pos = kth_by_bits(high, k0, recompute, compiled=compiled)
        value = torch.tensor([bits], dtype=torch.int32).view(torch.float32)
        expected = torch.kthvalue(mag, k0 + 1).values
        assert torch.equal(value, expected.view(1))
        assert below == int((mag < expected).sum())
        assert torch.equal(equal_pos, (mag == expected).nonzero().view(-1))
        assert below <= k0 < below + equal_pos.numel()
        most_ties = max(most_ties, equal_pos.numel())
    if kind == "ties":  # the case the tie handling exists for
        assert most_ties > 1000


def _inputs(
    method: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    n = METHODS.get(method).min_inputs if METHODS.get(method).max_inputs == 2 else 3
    xs = [(base.float() + torch.randn(shape, generator=g) * 0.01).to(dtype) for _ in range(n)]
    return xs, (base if METHODS.get(method).needs_base else None)


_PARAMS = {"weight": [0.7, -0.4, 1.0], "density": [0.5, 0.31, 0.9], "gamma": [0.05] * 3}
_KERNEL_METHODS = [
    (k, m) for k in KERNELS for m in sorted(KERNELS.get(k).methods)
]  # (kernel, method); the numba kernel runs inside streamed_task_arithmetic


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("shape", "group_dims"), [((48, 700), 0), ((4, 2, 40, 128), 2)])
@pytest.mark.parametrize(("kernel", "method"), _KERNEL_METHODS)
def test_every_kernel_equals_its_reference(
    monkeypatch: pytest.MonkeyPatch,
    ctx: KernelContext,
    kernel: str,
    method: str,
    shape: tuple[int, ...],
    group_dims: int,
    dtype: torch.dtype,
) -> None:
    monkeypatch.setattr(streamed, "MIN_GROUP", 1)
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    declared = METHODS.get(method)
    xs, base = _inputs(method, shape, dtype, seed=len(shape))
    model_params = [
        {
            k: v[i]
            for k, v in _PARAMS.items()
            if k in declared.params and declared.params[k].per_model
        }
        for i in range(len(xs))
    ]
    params = {"t": 0.3} if "t" in declared.params else {}
    if "rescale" in declared.params:
        params["rescale"] = False  # with rescale DARE's chunked L1 sums round differently

    def merge(how: KernelContext | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(7) if declared.random else None
        kw = dict(base=base, model_params=model_params, params=params, group_dims=group_dims)
        if how is None:
            return apply_method(method, xs, generator=generator, **kw)  # type: ignore[arg-type]
        return run_method(method, xs, generator=generator, ctx=how, **kw)  # type: ignore[arg-type]

    chosen = KERNELS.get(kernel)
    call = prepare_call(
        method, xs, base=base, model_params=model_params, params=params, group_dims=group_dims,
        generator=torch.Generator() if declared.random else None,
    )  # fmt: skip
    assert chosen.accepts(call)  # the case runs the kernel, not the fallback
    fast, ref = merge(ctx), merge(None)
    off = merge(KernelContext(MergeOptions(kernels={kernel: False}), threads=ctx.threads))
    assert torch.equal(off, ref)  # turned off by name: the reference
    assert fast.dtype == ref.dtype == dtype
    if chosen.exact:
        assert torch.equal(fast, ref)
    else:  # float32 rounding of the sums: a bfloat16 output may differ by one ulp
        rtol = 1e-5 if dtype == torch.float32 else 2.0**-7
        torch.testing.assert_close(fast, ref, rtol=rtol, atol=1e-8)
        if dtype != torch.float32:  # a rare flip of the last bit, not a drift
            assert int((fast != ref).sum()) <= fast.numel() // 100
    assert not torch.equal(fast, xs[0])  # the merge did something


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
    ctx: KernelContext,
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
    assert streamable(sparsifier, base, xs, group_dims)
    fast = streamed_gta(xs, **kwargs, ctx=ctx)  # type: ignore[arg-type]
    ref = generalized_task_arithmetic(xs, **kwargs)  # type: ignore[arg-type]
    assert fast.dtype == ref.dtype == dtype
    assert torch.equal(fast, ref)
    assert not torch.equal(fast, base)  # the merge did something


@pytest.mark.parametrize("high_buffer", [1 << 40, 0])
def test_a_one_entry_window_keeps_one_entry_per_group(
    monkeypatch: pytest.MonkeyPatch, ctx: KernelContext, high_buffer: int
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
    fast = streamed_gta([x], **kwargs, ctx=ctx)  # type: ignore[arg-type]
    ref = generalized_task_arithmetic([x], **kwargs)  # type: ignore[arg-type]
    assert torch.equal(fast, ref)
    assert ((fast != 0).sum(dim=1) == 1).all()


def test_streamed_ties_keeps_exactly_k_with_ties(
    monkeypatch: pytest.MonkeyPatch, ctx: KernelContext
) -> None:
    """One model, weight 1: the kept entries are the top-k ascending ranks of |delta|, equal
    magnitudes ranked by flat index (so among tied entries the later ones are kept)."""
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    n = 50000
    g = torch.Generator().manual_seed(5)
    base = torch.zeros(n)
    x = torch.randint(1, 4, (n,), generator=g).float()  # magnitudes 1, 2, 3: huge ties
    assert streamable(Sparsifier.magnitude, base, [x], 0)
    out = streamed_gta(
        [x],
        base=base,
        weights=[1.0],
        densities=[0.5],
        sparsifier=Sparsifier.magnitude,
        consensus=True,
        normalize=True,
        ctx=ctx,
    )
    same = dict(weights=[1.0], densities=[0.5], consensus=True, normalize=True)
    ref = generalized_task_arithmetic([x], base=base, sparsifier=Sparsifier.magnitude, **same)
    assert torch.equal(out, ref)  # type: ignore[arg-type]
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
    assert not streamable(Sparsifier.magnitude, base, xs, 0, rescale=True)
    assert not streamable(Sparsifier.random, base, xs, 0)  # no generator
    assert not streamable(Sparsifier.della, base, xs, 0, generator=torch.Generator())
    assert not streamable(Sparsifier.magnitude, base.double(), [xs[0].double()], 0)
    assert not streamable(Sparsifier.magnitude, base[:100], [xs[0][:100]], 0)  # small group
    assert streamable(Sparsifier.none, base, xs, 0, rescale=True)
    assert streamable(Sparsifier.random, base, xs, 0, generator=torch.Generator())


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
    ctx: KernelContext,
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

    def merge(how: KernelContext | None) -> torch.Tensor:
        fn = generalized_task_arithmetic if how is None else partial(streamed_gta, ctx=how)
        return fn(  # type: ignore[operator]
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

    fast = merge(ctx)
    ref = merge(None)
    assert fast.dtype == ref.dtype == dtype
    if rescale:
        torch.testing.assert_close(fast, ref, rtol=2e-6, atol=1e-7)
    else:
        assert torch.equal(fast, ref)


def test_streamed_dare_draws_the_reference_masks(
    monkeypatch: pytest.MonkeyPatch, ctx: KernelContext
) -> None:
    monkeypatch.setattr(streamed, "CHUNK", 1 << 12)
    shape = (8, 5000)
    base = torch.zeros(shape)
    xs = [torch.ones(shape), torch.full(shape, 2.0)]
    out = streamed_gta(
        xs,
        base=base,
        weights=[1.0, 1.0],
        densities=[0.3, 0.6],
        sparsifier=Sparsifier.random,
        generator=torch.Generator().manual_seed(4),
        ctx=ctx,
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
    g = torch.Generator().manual_seed(2)
    a = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    b = (0.6 * a.float() + 0.01 * torch.randn(shape, generator=g)).to(dtype)
    groups = 1 if group_dims == 0 else int(torch.tensor(shape[:group_dims]).prod())

    def fast(t: float, out_dtype: torch.dtype) -> torch.Tensor:
        nx, ny, dot = streamed_slerp_coefficients(a, b, groups)
        cx, cy = slerp_coefficients(nx, ny, dot, t=t)
        return streamed_combine(a, b, cx, cy, out_dtype)

    ref = slerp(a, b, t=0.3, group_dims=group_dims, out_dtype=torch.float32)
    torch.testing.assert_close(fast(0.3, torch.float32), ref, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(ref, torch.lerp(a.float(), b.float(), 0.3), rtol=1e-4, atol=0)
    assert torch.equal(fast(0.0, dtype), a)
    assert torch.equal(fast(1.0, dtype), b)
