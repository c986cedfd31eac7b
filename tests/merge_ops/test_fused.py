"""The fused Numba loops of the streamed path: bit-level agreement with torch's steps.

The whole-merge agreement (fused vs the reference, every method option) is in
``test_kernels.py``, which runs each case with and without these loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darwinmerge.merge.kernels import fused, run_method, streamed, streamed_gta
from darwinmerge.merge.ops import apply_method
from darwinmerge.merge.ops.task_vectors import Sparsifier
from darwinmerge.merge.options import KernelContext, MergeOptions

pytestmark = pytest.mark.skipif(not fused.AVAILABLE, reason="Numba missing")


def _specials() -> torch.Tensor:
    """float32 values whose bfloat16 rounding is delicate: halfway cases (ties to even,
    both parities), just above / below halfway, overflow to inf, subnormals, NaN."""
    bits = []
    for high in (0x3F80, 0x3F81, 0x7F7F, 0x0001, 0x8000, 0xBF80, 0xFF7F):
        for low in (0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF):
            bits.append((high << 16) | low)
    bits += [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC12345, 0x00000000]
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


def test_bfloat16_output_rounds_like_torch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([_specials(), torch.randn(100_000, generator=g) * 3])
    base = torch.zeros_like(x)
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    fused.mix(
        [x], base, out, [(0, x.numel(), 1)], x.numel(),
        lo=[None], hi=[None], ties=[None], masks=[None], factors=[None], weights=[1.0],
        consensus=False, normalize=False, divide_by=1.0, lambda_=1.0,
    )  # fmt: skip
    expected = (x - base + base).to(torch.bfloat16)  # -0.0 + 0.0 is +0.0 in both
    nan = expected.isnan()
    assert int(nan.sum()) == 3 and torch.equal(out.isnan(), nan)
    assert torch.equal(out.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])


def test_high_bits_match_torch() -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 5000, generator=g) * 0.02).to(torch.bfloat16)
    base = (torch.randn(3, 5000, generator=g) * 0.02).to(torch.bfloat16)
    d = x.float() - base.float()
    want = (d.view(torch.int32) & 0x7FFFFFFF) >> 16
    high = torch.empty(x.numel(), dtype=torch.int16)
    assert fused.high_bits(x, base, high) is high
    assert torch.equal(high.to(torch.int32), want.reshape(-1))


def test_bucket_members_lists_each_groups_bucket_in_order() -> None:
    high = torch.tensor([5, 1, 5, 2, 5, 2, 2, 7, 1, 2, 0, 2], dtype=torch.int16)
    buckets = torch.tensor([5, 2, 2], dtype=torch.int32)
    got = fused.bucket_members(high, 3, buckets)
    assert got.tolist() == [0, 2, 5, 6, 9, 11]
    # a wrong guess of the count is corrected
    assert fused.bucket_members(high, 3, buckets, expected=1).tolist() == got.tolist()


@pytest.mark.parametrize("m", [8, 13, 4096, 4099])
def test_keep_bits_packs_as_the_bit_buffer_does(m: int) -> None:
    g = torch.Generator().manual_seed(m)
    drawn = torch.rand(m, generator=g)
    density = 0.37
    plan = [(0, m, 1)]
    bits = streamed._Bits(plan, torch.device("cpu"))
    bits.put(0, drawn < density)
    packed = torch.empty_like(bits.data)
    x = torch.randn(m, generator=g)
    base = torch.randn(m, generator=g)
    before = torch.zeros(1, dtype=torch.float64)
    after = torch.zeros(1, dtype=torch.float64)
    fused.keep_bits(drawn, density, packed, x, base, 1, (before, after))
    assert torch.equal(packed, bits.data)
    mag = (x - base).abs().double()
    torch.testing.assert_close(before, mag.sum().view(1), rtol=1e-12, atol=0)
    torch.testing.assert_close(after, (mag * (drawn < density)).sum().view(1), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("dtype", "used"), [(torch.bfloat16, True), (torch.float32, True), (torch.float16, False)]
)
def test_the_loops_run_for_bfloat16_and_float32(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, used: bool
) -> None:
    calls: list[str] = []
    for name in ("mix", "high_bits", "bucket_members"):
        real = getattr(fused, name)

        def spy(*a: object, _real: object = real, _name: str = name, **k: object) -> object:
            calls.append(_name)
            return _real(*a, **k)  # type: ignore[operator]

        monkeypatch.setattr(fused, name, spy)
    g = torch.Generator().manual_seed(2)
    base = (torch.randn(4, 8192, generator=g) * 0.02).to(dtype)
    xs = [(torch.randn(4, 8192, generator=g) * 0.02).to(dtype) for _ in range(2)]
    out = streamed_gta(
        xs, base=base, weights=[0.5, 0.5], densities=[0.5, 0.5],
        sparsifier=Sparsifier.magnitude, consensus=True, normalize=True, group_dims=1,
    )  # fmt: skip
    assert out.dtype == dtype
    # float16 keeps torch's steps (the member scan of an int16 buffer is fused for all)
    assert {"mix", "high_bits"} <= set(calls) if used else not {"mix", "high_bits"} & set(calls)
    assert "bucket_members" in calls


@pytest.mark.parametrize("on", [True, False])
def test_the_options_turn_the_loops_on_and_off(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    """``MergeOptions(kernels={"numba": False})`` keeps the streamed path's torch steps;
    the environment has no say (``DARWIN_FUSED`` is not read any more)."""
    monkeypatch.setenv("DARWIN_FUSED", "0")
    calls: list[str] = []
    real = fused.mix
    monkeypatch.setattr(fused, "mix", lambda *a, **k: calls.append("mix") or real(*a, **k))
    g = torch.Generator().manual_seed(3)
    base = (torch.randn(4, 8192, generator=g) * 0.02).to(torch.bfloat16)
    xs = [(torch.randn(4, 8192, generator=g) * 0.02).to(torch.bfloat16) for _ in range(2)]
    ctx = KernelContext(MergeOptions(kernels={"numba": on}))
    params = [{"weight": 0.5, "density": 0.5}] * 2
    out = run_method("ties", xs, base=base, model_params=params, group_dims=1, ctx=ctx)
    assert calls == (["mix"] if on else [])
    assert torch.equal(out, apply_method("ties", xs, base=base, model_params=params, group_dims=1))


@pytest.mark.parametrize(
    ("seed", "sizes"), [(0, [5]), (7, [623, 1, 700, 5000]), (123, [1, 1, 1, 1250]), (9, [70_000])]
)
def test_mt_stream_draws_what_torch_rand_draws(seed: int, sizes: list[int]) -> None:
    """Same numbers as torch.rand on the generator, across the 624-word regenerations,
    and the generator's state afterwards as torch would have left it."""
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(seed % 5, generator=ours)
    torch.rand(seed % 5, generator=theirs)
    with fused.MTStream(ours) as stream:
        got = [stream.uniform(torch.empty(n)) for n in sizes]
    want = [torch.rand(n, generator=theirs) for n in sizes]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert torch.equal(torch.rand(1000, generator=ours), torch.rand(1000, generator=theirs))


def test_stream_check_passes_on_this_torch_and_catches_a_stream_that_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The once-per-process check against torch's own generator: true on this torch; a
    compiled stream that draws other numbers (as a torch with another generator would
    look) is caught, and MTStream then draws through torch.rand: the same numbers, bits
    and generator state as torch."""
    monkeypatch.setattr(fused, "_stream_verdict", None)
    assert fused.stream_matches_torch() is True
    assert fused.MTStream(torch.Generator()).exact

    def off_by_one_draw(state: np.ndarray, pos: np.ndarray, out: np.ndarray) -> None:
        real(state, pos, out)
        out[1:] = out[:-1].copy()  # one draw late: a stream that is not torch's

    real = fused._mt_uniform
    monkeypatch.setattr(fused, "_mt_uniform", off_by_one_draw)
    monkeypatch.setattr(fused, "_stream_verdict", None)
    assert fused.stream_matches_torch() is False
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    m, rows = 2000, 4
    x = torch.randn(m, generator=torch.Generator().manual_seed(6))
    base = torch.zeros(m)
    with fused.MTStream(ours) as stream:
        assert not stream.exact
        drawn = stream.uniform(torch.empty(700))
        got = torch.empty((m + 7) // 8, dtype=torch.uint8)
        sums = (torch.zeros(rows, dtype=torch.float64), torch.zeros(rows, dtype=torch.float64))
        stream.keep_bits(0.3, got, x, base, rows, sums)
    assert torch.equal(drawn, torch.rand(700, generator=theirs))
    want = torch.empty_like(got)
    want_sums = (torch.zeros(rows, dtype=torch.float64), torch.zeros(rows, dtype=torch.float64))
    fused.keep_bits(torch.rand(m, generator=theirs), 0.3, want, x, base, rows, want_sums)
    assert torch.equal(got, want) and torch.equal(sums[1], want_sums[1])
    assert 0 < float(sums[1].sum()) < float(sums[0].sum())
    assert torch.equal(ours.get_state(), theirs.get_state())
    monkeypatch.setattr(fused, "_stream_verdict", None)  # the next caller checks again


def _sequential_sums(
    x: torch.Tensor, base: torch.Tensor, keep: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, ``sum |float32(x - base)|`` and the same over ``keep``, added one element
    after another in float64 (``np.cumsum`` is sequential), as the loops promise."""
    mag = (x.float() - base.float()).abs().double().view(rows, -1).numpy()
    kept = np.where(keep.view(rows, -1).numpy(), mag, 0.0)
    return (
        torch.from_numpy(np.cumsum(mag, axis=1)[:, -1].copy()),
        torch.from_numpy(np.cumsum(kept, axis=1)[:, -1].copy()),
    )


#: densities whose float32 rounding matters: ordinary ones, 1/3, an exact multiple of
#: 2^-24, one a quarter step above a multiple in [0.5, 1) (float32 rounds it down onto
#: the multiple, so a float64 comparison would keep that draw and float32 does not), and
#: the ends
_DENSITIES = [0.1, 0.3, 0.5, 0.9, 1 / 3, 5033165 / 2**24, (12_000_000 + 0.25) / 2**24, 0.0, 1.0]


@pytest.mark.parametrize("density", _DENSITIES)
def test_keep_threshold_agrees_with_the_float32_comparison_for_every_draw(
    density: float,
) -> None:
    r = torch.arange(1 << 24, dtype=torch.int32)
    threshold = fused.keep_threshold(density)
    assert torch.equal(r < threshold, r.float() * 2.0**-24 < density)
    assert 0 <= threshold <= 1 << 24
    assert fused.keep_threshold(math.nan) == 0 and fused.keep_threshold(2.0) == 1 << 24


@pytest.mark.parametrize(("m", "rows"), [(12_297, 3), (4096 * 3, 48), (1000, 1), (7, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_bits_sums_rows_across_tiles_in_element_order(
    m: int, rows: int, dtype: torch.dtype
) -> None:
    """Rows that start and end inside the loops' tiles: the same float64 sums, exactly,
    as adding the elements one after another."""
    g = torch.Generator().manual_seed(m + rows)
    drawn = torch.rand(m, generator=g)
    x = (torch.randn(m, generator=g) * 0.02).to(dtype)
    base = (torch.randn(m, generator=g) * 0.02).to(dtype)
    packed = torch.empty((m + 7) // 8, dtype=torch.uint8)
    before = torch.full((rows,), 0.5, dtype=torch.float64)
    after = torch.full((rows,), 0.25, dtype=torch.float64)
    fused.keep_bits(drawn, 0.3, packed, x, base, rows, (before, after))
    want_before, want_after = _sequential_sums(x, base, drawn < 0.3, rows)
    assert torch.equal(before, want_before + 0.5)
    assert torch.equal(after, want_after + 0.25)


@pytest.mark.parametrize("density", _DENSITIES)
@pytest.mark.parametrize(
    ("seed", "sizes"), [(0, [5, 13]), (7, [623, 1, 700, 5000]), (9, [70_003, 4096, 8])]
)
def test_mt_stream_keep_bits_are_uniform_then_keep_bits(
    density: float, seed: int, sizes: list[int]
) -> None:
    """The fused draw-and-pack gives the bits and sums of drawing the uniforms first and
    packing them, chunk after chunk across the 624-word regenerations, and leaves the
    generator where torch.rand would."""
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(seed % 5, generator=ours)
    torch.rand(seed % 5, generator=theirs)
    data = torch.Generator().manual_seed(seed + 1)
    with fused.MTStream(ours) as stream:
        for m in sizes:
            rows = 1 if m % 4 else 4
            x = (torch.randn(m, generator=data) * 0.02).to(torch.bfloat16)
            base = (torch.randn(m, generator=data) * 0.02).to(torch.bfloat16)
            got = torch.full(((m + 7) // 8,), 0xA5, dtype=torch.uint8)
            sums = (torch.zeros(rows, dtype=torch.float64), torch.zeros(rows, dtype=torch.float64))
            stream.keep_bits(density, got, x, base, rows, sums)
            drawn = torch.rand(m, generator=theirs)
            want = torch.empty_like(got)
            want_sums = (torch.zeros(rows, dtype=torch.float64), torch.zeros_like(sums[1]))
            fused.keep_bits(drawn, density, want, x, base, rows, want_sums)
            assert torch.equal(got, want)
            assert torch.equal(sums[0], want_sums[0]) and torch.equal(sums[1], want_sums[1])
            # and the bits are torch's comparison, packed as the bit buffer packs it
            bits = streamed._Bits([(0, m, 1)], torch.device("cpu"))
            bits.put(0, drawn < density)
            assert torch.equal(got, bits.data)
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert torch.equal(torch.rand(1000, generator=ours), torch.rand(1000, generator=theirs))
