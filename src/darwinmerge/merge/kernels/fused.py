"""The ``numba`` kernel: fused CPU loops of the streamed task-vector path, bit-identical.

:mod:`.streamed` computes TIES / DARE / breadcrumbs / task arithmetic as a sequence of
torch operations over cache-sized chunks: each pass is fast, but a TIES merge of two
models makes about fifty of them per element (about 9 ns per element on the project's
CPU). These kernels do the same float32 operations, in the same order, in one loop per
pass:

* :func:`high_bits`: ``|float32(x) - float32(base)|``'s high 16 bits per element (the
  int16 buffer of the rank select; its histograms stay ``torch.bincount``, faster than a
  scalar loop on the narrow distributions of weight deltas);
* :func:`bucket_members`: the flat positions, per group, of the entries in one bucket;
* :class:`MTStream` and :func:`keep_bits`: DARE's draws (torch's mt19937 stream) and
  their packed keep bits with the L1 rescale sums (:meth:`MTStream.keep_bits` does both
  in one loop, without the float32 draws); the stream is checked against torch's own
  generator once per process (:func:`stream_matches_torch`) and is ``torch.rand`` where
  this torch draws otherwise;
* :func:`mix`: the mix pass (rank-window or Bernoulli keep masks, weights, TIES sign
  consensus and normalisation, lambda, the base) writing the output dtype.

bfloat16 values are widened to float32 exactly (their 16 bits shifted up) and float32
results are narrowed to bfloat16 by round-to-nearest-even, NaN to 0xFFFF, as torch's
vectorised conversion does. The kernels take float32 or bfloat16 inputs (one dtype for
all models and one for the base); anything else (float16, another device) keeps the torch
ops. The streamed path uses them where the merge's options allow the ``numba`` kernel
(:class:`~darwinmerge.merge.options.MergeOptions`) and Numba is importable
(:data:`AVAILABLE`). Numba compiles each kernel on first use and caches the machine code
next to this file (about a second, once per installation and signature).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = [
    "AVAILABLE",
    "MTStream",
    "PARALLEL_MIN",
    "bucket_members",
    "high_bits",
    "keep_bits",
    "keep_threshold",
    "mix",
    "stream_matches_torch",
    "supported",
]

try:  # pragma: no cover - exercised by the whole suite either way
    import numba
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    numba = None  # type: ignore[assignment]

#: whether Numba is importable (the ``numba`` kernel then runs where the options allow)
AVAILABLE: bool = numba is not None

_DTYPES = {torch.bfloat16: torch.int16, torch.float32: torch.float32}
#: a mix pass over at least this many elements is split over the ``threads`` it is given
#: (the loops release the GIL; a whole 1 GiB embedding that runs alone then uses every core)
PARALLEL_MIN = 1 << 24


def supported(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors (Numba present; CPU, float32 or bfloat16)."""
    return AVAILABLE and all(t.device.type == "cpu" and t.dtype in _DTYPES for t in tensors)


def as_array(t: torch.Tensor) -> np.ndarray:
    """A flat NumPy view of a contiguous CPU tensor (bfloat16 as its int16 bits)."""
    return t.reshape(-1).view(_DTYPES[t.dtype]).numpy()


if numba is not None:

    @intrinsic
    def _i2f(typingctx: Any, v: Any) -> Any:
        """Reinterpret int32 bits as a float32."""

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(types.float32))

        return types.float32(types.int32), codegen

    @intrinsic
    def _f2i(typingctx: Any, v: Any) -> Any:
        """Reinterpret float32 bits as an int32."""

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(types.int32))

        return types.int32(types.float32), codegen

    _jit = numba.njit(cache=True, boundscheck=False, nogil=True)
    _inline = numba.njit(inline="always")

    def _load(a: Any, j: Any) -> Any:  # pragma: no cover - replaced by the overload
        raise NotImplementedError

    def _store(a: Any, j: Any, v: Any) -> Any:  # pragma: no cover - replaced by the overload
        raise NotImplementedError

    @numba.extending.overload(_load, inline="always")
    def _load_impl(a: Any, j: Any) -> Any:
        if a.dtype == types.int16:  # bfloat16 bits: exactly the float32 with these high bits

            def load_bf16(a: Any, j: Any) -> Any:
                return _i2f(np.int32(np.uint32(np.uint16(a[j])) << np.uint32(16)))  # type: ignore[call-arg]

            return load_bf16
        if a.dtype == types.float32:

            def load_f32(a: Any, j: Any) -> Any:
                return a[j]

            return load_f32
        return None

    @numba.extending.overload(_store, inline="always")
    def _store_impl(a: Any, j: Any, v: Any) -> Any:
        if a.dtype == types.int16:  # round to nearest even; NaN -> 0xFFFF (torch's vector path)

            def store_bf16(a: Any, j: Any, v: Any) -> None:
                u = np.uint32(_f2i(v))  # type: ignore[call-arg]
                if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                    a[j] = np.int16(-1)
                else:
                    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> 16
                    a[j] = np.int16(np.uint16(r))

            return store_bf16
        if a.dtype == types.float32:

            def store_f32(a: Any, j: Any, v: Any) -> None:
                a[j] = v

            return store_f32
        return None

    @_inline
    def _abs_bits(v: Any) -> Any:
        return _f2i(v) & np.int32(0x7FFFFFFF)  # type: ignore[call-arg]

    @_jit
    def _high_bits(x, base, high):  # type: ignore[no-untyped-def]
        for j in range(base.shape[0]):
            high[j] = np.int16(_abs_bits(_load(x, j) - _load(base, j)) >> 16)

    @_jit
    def _bucket_members(high, per_group, buckets, out):  # type: ignore[no-untyped-def]
        k = 0
        for g in range(high.shape[0] // per_group):
            b = buckets[g]
            for j in range(g * per_group, (g + 1) * per_group):
                if high[j] == b:
                    if k < out.shape[0]:
                        out[k] = j
                    k += 1
        return k

    #: 8 keep flags (bytes 0 / 1, read as one little-endian uint64) times this have the
    #: flags' bits side by side in the top byte: flag k lands on bit 56 + k, no carries
    _GATHER = np.uint64(0x0102040810204080)
    #: elements per tile of the packing loops: their flag bytes stay in the L1 cache
    TILE = 4096

    @_inline
    def _pack(flags: Any, k: Any, packed: Any, i0: Any) -> None:
        """``packed[i0 + i]`` = flag bytes ``8i .. 8i + 7`` of ``flags[:k]`` as bits 0 .. 7
        (flags past ``k`` are set to 0 first: ``flags`` is a whole tile). A multiply per 8
        flags instead of 8 shifts and ORs, so the loop vectorizes."""
        nb = (k + 7) // 8
        for j in range(k, 8 * nb):
            flags[j] = np.uint8(0)
        words = flags.view(np.uint64)
        dst = packed[i0 : i0 + nb]
        for i in range(nb):
            dst[i] = np.uint8((words[i] * _GATHER) >> np.uint64(56))

    @_inline
    def _add_sums(  # type: ignore[no-untyped-def]
        flags, k, x, base, t0, width, end, mags, acc, before, after
    ):
        """The L1 sums of elements ``t0 .. t0 + k`` (``flags``: their keep flags): each
        row's (``width`` elements, rows up to element ``end``) ``sum |x - base|`` and the
        same over the kept entries, added in float64 in element order (the running pair in
        ``acc``) and, once a row is complete, to ``before`` / ``after``.

        The magnitudes and kept magnitudes (``a`` or +0.0, what the comparison added
        before) are computed first in one vectorized loop, so the float64 chains, whose
        order is kept, run alone in the second.
        """
        k = min(k, end - t0)
        xs = x[t0 : t0 + k]
        bs = base[t0 : t0 + k]
        kept_mags = mags[1]
        for j in range(k):
            a = abs(_load(xs, j) - _load(bs, j))
            mags[0, j] = a
            kept_mags[j] = _i2f(_f2i(a) & -np.int32(flags[j]))
        total = acc[0]
        kept = acc[1]
        j = 0
        while j < k:
            r = (t0 + j) // width
            stop = min(k, (r + 1) * width - t0)
            for i in range(j, stop):
                total += mags[0, i]
                kept += kept_mags[i]
            j = stop
            if t0 + j == (r + 1) * width:
                before[r] += total
                after[r] += kept
                total = 0.0
                kept = 0.0
        acc[0] = total
        acc[1] = kept

    def _tile_flags(src: Any, pos: Any, flags: Any, t0: Any, p: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    @numba.extending.overload(_tile_flags, inline="always")
    def _tile_flags_impl(src: Any, pos: Any, flags: Any, t0: Any, p: Any) -> Any:
        """The keep flags of one tile: from given float32 draws (``drawn[t] < p``), or
        drawn now from an mt19937 state (uint32 words; ``p`` is the integer threshold)."""
        if src.dtype == types.float32:

            def from_draws(src: Any, pos: Any, flags: Any, t0: Any, p: Any) -> None:
                drawn = src[t0 : t0 + flags.shape[0]]
                for j in range(flags.shape[0]):
                    flags[j] = np.uint8(drawn[j] < p)

            return from_draws
        if src.dtype == types.uint32:

            def from_stream(src: Any, pos: Any, flags: Any, t0: Any, p: Any) -> None:
                _mt_draw(src, pos, flags, p)

            return from_stream
        return None

    @_jit
    def _keep_tiles(src, pos, p, packed, x, base, rows, before, after, sums):  # type: ignore[no-untyped-def]
        """Keep bits of ``x.shape[0]`` elements a tile at a time (flags from
        :func:`_tile_flags`), packed, with the L1 sums when ``sums``."""
        m = x.shape[0]
        width = m // rows
        flags = np.empty(TILE, dtype=np.uint8)
        mags = np.empty((2, TILE), dtype=np.float32)
        acc = np.zeros(2)
        for t0 in range(0, m, TILE):
            k = min(TILE, m - t0)
            _tile_flags(src, pos, flags[:k], t0, p)
            _pack(flags, k, packed, t0 // 8)
            if sums:
                _add_sums(flags, k, x, base, t0, width, rows * width, mags, acc, before, after)

    @_inline
    def _sum_models(d: Any, total: Any, m: Any) -> None:
        """``total[:m] = d[0, :m] + d[1, :m] + ...`` left to right (as ``sum(dim=0)``)."""
        for t in range(m):
            total[t] = d[0, t]
        for i in range(1, d.shape[0]):
            di = d[i]
            for t in range(m):
                total[t] = total[t] + di[t]

    _UPPER = np.uint32(0x80000000)
    _LOWER = np.uint32(0x7FFFFFFF)
    _MATRIX = np.uint32(0x9908B0DF)

    @_inline
    def _regenerate(state: Any) -> None:
        """mt19937's twist of the 624 words, in three plain loops that LLVM vectorizes.

        Word ``k`` becomes ``state[k + 397 mod 624] ^ f(state[k], state[k + 1])``. For
        k < 227 the words read are all still old (read ahead of their own update); for
        227 <= k < 623 ``state[k - 227]`` is one this pass already wrote, 227 words back,
        farther than any vector is wide; word 623 reads the new words 0 and 396.
        """
        for k in range(227):
            y = (state[k] & _UPPER) | (state[k + 1] & _LOWER)
            state[k] = state[k + 397] ^ (y >> np.uint32(1)) ^ (_MATRIX & -(y & np.uint32(1)))
        for k in range(227, 623):
            y = (state[k] & _UPPER) | (state[k + 1] & _LOWER)
            state[k] = state[k - 227] ^ (y >> np.uint32(1)) ^ (_MATRIX & -(y & np.uint32(1)))
        y = (state[623] & _UPPER) | (state[0] & _LOWER)
        state[623] = state[396] ^ (y >> np.uint32(1)) ^ (_MATRIX & -(y & np.uint32(1)))

    @_inline
    def _temper24(y: Any) -> Any:
        """The low 24 bits of mt19937's tempered output of word ``y``, as an int32."""
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        return np.int32(y & np.uint32(0xFFFFFF))

    def _put_draw(dst: Any, j: Any, r: Any, threshold: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    @numba.extending.overload(_put_draw, inline="always")
    def _put_draw_impl(dst: Any, j: Any, r: Any, threshold: Any) -> Any:
        if dst.dtype == types.float32:  # torch.rand's float32: r * 2^-24 (exact)

            def put_uniform(dst: Any, j: Any, r: Any, threshold: Any) -> None:
                dst[j] = np.float32(r) * np.float32(1.0 / 16777216.0)

            return put_uniform
        if dst.dtype == types.uint8:  # the keep flag: r * 2^-24 < p  <=>  r < threshold

            def put_keep(dst: Any, j: Any, r: Any, threshold: Any) -> None:
                dst[j] = np.uint8(r < threshold)

            return put_keep
        return None

    @_inline
    def _mt_draw(state: Any, pos: Any, dst: Any, threshold: Any) -> None:
        """``dst[:]`` = the next draws of the stream (state uint32[624], pos = [left, next]
        as torch keeps them): float32 uniforms, or uint8 keep flags (1 where the draw's 24
        bits are below ``threshold``).

        torch regenerates the 624 words when a draw finds ``left == 1``; between
        regenerations the words ``next, next + 1, ..`` are tempered in one contiguous loop
        (slices, so that no index can be negative and the loop vectorizes).
        """
        left = pos[0]
        nxt = pos[1]
        n = dst.shape[0]
        t = 0
        while t < n:
            if left == 1:
                _regenerate(state)
                left = 625  # one more than torch keeps: its draw is counted below
                nxt = 0
            k = min(left - 1, n - t)
            src = state[nxt : nxt + k]
            out = dst[t : t + k]
            for j in range(k):
                _put_draw(out, j, _temper24(src[j]), threshold)
            nxt += k
            left -= k
            t += k
        pos[0] = left
        pos[1] = nxt

    @_jit
    def _mt_uniform(state, pos, out):  # type: ignore[no-untyped-def]
        """``out[:] = torch.rand`` from an mt19937 state (uint32[624]; pos = [left, next])
        exactly as torch's CPU generator draws a float32: the low 24 bits of each 32-bit
        output times 2^-24."""
        _mt_draw(state, pos, out, np.int32(0))

    #: elements per block of the mix loop: its float32 buffers stay in the L1 cache
    BLOCK = 2048

    @_jit
    def _mix(  # type: ignore[no-untyped-def]
        xs, base, out, plan, per_group, lo, hi, ties, bits, bit_offsets, factors, rescale,
        weights, flags, divide_by, lambda_,
    ):  # fmt: skip
        n = len(xs)
        zero = np.float32(0.0)
        one = np.float32(1.0)
        size = BLOCK
        d = np.empty((n, size), dtype=np.float32)
        keep = np.empty(size, dtype=np.bool_)
        elected = np.empty(size, dtype=np.int32)
        b = np.empty(size, dtype=np.float32)
        total = np.empty(size, dtype=np.float32)
        divisor = np.empty(size, dtype=np.float32)
        tie_at = np.zeros(n, dtype=np.int64)
        consensus = flags[0]
        normalize = flags[1]
        use_lambda = flags[2]
        for c in range(plan.shape[0]):
            s = plan[c, 0]
            rows = plan[c, 2]
            width = (plan[c, 1] - s) // rows
            for r in range(rows):
                g = s // per_group + r
                row_end = s + (r + 1) * width
                for j0 in range(s + r * width, row_end, size):
                    m = min(size, row_end - j0)
                    for t in range(m):
                        b[t] = _load(base, j0 + t)
                    for i in range(n):
                        x = xs[i]
                        di = d[i]
                        for t in range(m):
                            di[t] = _load(x, j0 + t) - b[t]
                        low = lo[i, g]
                        high = hi[i, g]
                        if low >= 0 or high >= 0:
                            # strict rank-window bounds, then the listed tied entries
                            no_low = low < 0
                            no_high = high < 0
                            for t in range(m):
                                a = _abs_bits(di[t])
                                keep[t] = (no_low | (a > low)) & (no_high | (a < high))
                            tl = ties[i]
                            p = tie_at[i]
                            while p < tl.shape[0] and tl[p] < j0 + m:
                                if tl[p] >= j0:
                                    keep[tl[p] - j0] = True
                                p += 1
                            tie_at[i] = p
                            for t in range(m):  # branch-free: AND with all-ones / zero
                                di[t] = _i2f(_f2i(di[t]) & -np.int32(keep[t]))
                        if bit_offsets[i, 0] >= 0:  # Bernoulli keep bits of plan chunk c
                            packed = bits[i]
                            first = bit_offsets[i, c]
                            q0 = j0 - s
                            for t in range(m):
                                q = q0 + t
                                bit = np.int32(packed[first + (q >> 3)] >> (q & 7)) & np.int32(1)
                                di[t] = _i2f(_f2i(di[t]) & -bit)
                            if rescale[i]:
                                f = factors[i, g]
                                for t in range(m):
                                    di[t] = di[t] * f
                        w = weights[i]
                        if w != one:
                            for t in range(m):
                                di[t] = di[t] * w
                    _sum_models(d, total, m)
                    if consensus:
                        # elected sign: - where the sum is < 0 (+0.0 turns -0.0 into +0.0)
                        for t in range(m):
                            elected[t] = _f2i(total[t] + zero) >> np.int32(31)
                        for i in range(n):
                            di = d[i]
                            for t in range(m):  # keep where the sign bit is the elected one
                                v = _f2i(di[t])
                                di[t] = _i2f(v & ~((v >> np.int32(31)) ^ elected[t]))
                        _sum_models(d, total, m)
                        if normalize:
                            for t in range(m):
                                divisor[t] = zero
                            for i in range(n):
                                di = d[i]
                                w = weights[i]
                                wb = _f2i(w)
                                for t in range(m):  # + w where d != 0, else + (+0.0)
                                    nz = -np.int32(_abs_bits(di[t]) != 0)
                                    divisor[t] = divisor[t] + _i2f(wb & nz)
                            for t in range(m):
                                v = divisor[t]
                                total[t] = total[t] / (one if _abs_bits(v) == 0 else v)
                    elif normalize:
                        for t in range(m):
                            total[t] = total[t] / divide_by
                    if use_lambda:
                        for t in range(m):
                            total[t] = total[t] * lambda_
                    for t in range(m):
                        _store(out, j0 + t, total[t] + b[t])


def keep_bits(
    drawn: torch.Tensor,
    density: float,
    packed: torch.Tensor,
    x: torch.Tensor,
    base: torch.Tensor,
    rows: int,
    sums: tuple[torch.Tensor, torch.Tensor] | None,
) -> None:
    """Bernoulli keep bits ``drawn < density`` (float32 uniforms, compared in float32 as
    ``torch.lt`` does) packed 8 per byte (bit ``k`` of byte ``i`` is element ``8i + k``)
    into ``packed``; with ``sums`` = (before, after) (float64, ``[rows]``) also adds each
    row's ``sum |float32(x) - float32(base)|`` and the same over the kept entries (summed
    in float64). ``x`` and ``base`` are as long as ``drawn``."""
    _keep_tiles(
        drawn.numpy(), _NO_POS, np.float32(density), *_bits_args(packed, x, base, rows, sums)
    )


_NO_SUMS = torch.zeros(1, dtype=torch.float64)
_NO_POS = np.zeros(2, dtype=np.int64)  # given draws carry no stream position


def _bits_args(
    packed: torch.Tensor,
    x: torch.Tensor,
    base: torch.Tensor,
    rows: int,
    sums: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[Any, ...]:
    """The compiled keep-bit loops' arguments after the draws: the packed bits, the
    inputs, the rows and the sums (a dummy pair and a false flag without sums)."""
    before, after = sums if sums is not None else (_NO_SUMS, _NO_SUMS)
    return (
        packed.numpy(),
        as_array(x),
        as_array(base),
        rows,
        before.numpy(),
        after.numpy(),
        sums is not None,
    )


def keep_threshold(density: float) -> int:
    """The integer ``T`` with ``r * 2^-24 < float32(density)`` exactly when ``r < T``, for
    every 24-bit ``r`` (the draw ``torch.rand`` makes of it): ``ceil(p * 2^24)`` for the
    float32 ``p``, within ``[0, 2^24]`` (0 for NaN)."""
    p = float(np.float32(density))
    if not p > 0:
        return 0
    if p >= 1:
        return 1 << 24
    return math.ceil(p * (1 << 24))  # p * 2^24 is exact in float64


_stream_verdict: bool | None = None
_stream_lock = threading.Lock()


def stream_matches_torch() -> bool:
    """Whether :class:`MTStream` reproduces this torch's CPU generator: the same
    ``torch.rand`` numbers across a 624-word regeneration, and the same generator state
    afterwards. Checked once per process (a few microseconds), so a torch release that
    lays out its generator state or draws differently makes :class:`MTStream` fall back
    to ``torch.rand`` instead of drawing other numbers."""
    global _stream_verdict
    with _stream_lock:
        if _stream_verdict is None:
            _stream_verdict = _check_stream()
        return _stream_verdict


def _check_stream() -> bool:
    if numba is None:
        return False
    for seed, lead, size in ((0, 3, 1500), (20_260_101, 0, 700)):
        ours = torch.Generator().manual_seed(seed)
        theirs = torch.Generator().manual_seed(seed)
        torch.rand(lead, generator=ours)
        torch.rand(lead, generator=theirs)
        try:
            with MTStream(ours, _verified=True) as stream:
                got = stream.uniform(torch.empty(size))
        except Exception:  # another state layout: not ours to read
            return False
        want = torch.rand(size, generator=theirs)
        if not torch.equal(got, want) or not torch.equal(ours.get_state(), theirs.get_state()):
            return False
        if not torch.equal(torch.rand(8, generator=ours), torch.rand(8, generator=theirs)):
            return False
    return True


class MTStream:
    """Draw ``torch.rand`` values of a CPU ``torch.Generator`` in a compiled loop.

    Reads the generator's mt19937 state once, draws with :func:`uniform` (the same
    numbers and the same state as ``torch.rand(..., generator=g)``, tested), and writes
    the state back on :meth:`close` (or leaving the ``with`` block), so later torch draws
    continue the stream. Nothing else may draw from the generator meanwhile. Where
    :func:`stream_matches_torch` finds this torch draws otherwise, ``exact`` is False and
    every draw is ``torch.rand`` on the generator itself (the same results, slower).
    """

    # CPUGeneratorImplState: seed u64 @0, left i32 @8, seeded i32 @12, next u64 @16,
    # state u64[624] @24, then the normal-sample cache (kept as it was)
    def __init__(self, generator: torch.Generator, *, _verified: bool = False) -> None:
        self.generator = generator
        #: draws in the compiled loop (False: through torch.rand)
        self.exact = _verified or stream_matches_torch()
        if not self.exact:
            return
        self._raw = generator.get_state().numpy().copy()
        if self._raw.size != 5056:
            raise RuntimeError(f"unexpected CPU generator state of {self._raw.size} bytes")
        self._state = self._raw[24 : 24 + 624 * 8].view(np.uint64).astype(np.uint32)
        left = int(self._raw[8:12].view(np.int32)[0])
        nxt = int(self._raw[16:24].view(np.uint64)[0])
        self._pos = np.array([left, nxt], dtype=np.int64)

    def uniform(self, out: torch.Tensor) -> torch.Tensor:
        """Fill the float32 CPU tensor ``out`` as ``torch.rand`` would; returns ``out``."""
        if not self.exact:
            return out.copy_(torch.rand(out.shape, generator=self.generator))
        _mt_uniform(self._state, self._pos, out.numpy())
        return out

    def keep_bits(
        self,
        density: float,
        packed: torch.Tensor,
        x: torch.Tensor,
        base: torch.Tensor,
        rows: int,
        sums: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """:func:`keep_bits` of the next ``x.numel()`` draws, without their float32 values:
        the same bits, sums and generator state as :meth:`uniform` into a buffer and then
        :func:`keep_bits` on it, at a fraction of the cost (the comparison is made on the
        24-bit integers, against :func:`keep_threshold`)."""
        if not self.exact:
            drawn = torch.rand(x.numel(), generator=self.generator)
            keep_bits(drawn, density, packed, x, base, rows, sums)
            return
        threshold = np.int32(keep_threshold(density))
        _keep_tiles(self._state, self._pos, threshold, *_bits_args(packed, x, base, rows, sums))

    def close(self) -> None:
        if not self.exact:
            return
        raw = self._raw
        raw[8:12] = np.array([self._pos[0]], dtype=np.int32).view(np.uint8)
        raw[16:24] = np.array([self._pos[1]], dtype=np.uint64).view(np.uint8)
        raw[24 : 24 + 624 * 8] = self._state.astype(np.uint64).view(np.uint8)
        self.generator.set_state(torch.from_numpy(raw))

    def __enter__(self) -> MTStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def high_bits(x: torch.Tensor, base: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``high[j] = |float32(x) - float32(base)|``'s bits >> 16 (int16); returns ``high``."""
    _high_bits(as_array(x), as_array(base), high.numpy())
    return high


def bucket_members(
    high: torch.Tensor, groups: int, buckets: torch.Tensor, expected: int | None = None
) -> torch.Tensor:
    """Flat positions (ascending) where ``high`` (int16, ``groups`` equal groups) equals
    its group's bucket (``buckets[g]``, int16). ``expected``: how many there are, if known
    (else a buffer of 1/16 of the elements is tried first)."""
    per_group = high.numel() // groups
    size = expected if expected is not None else max(16, high.numel() // 16)
    found = torch.empty(size, dtype=torch.int64)
    k = _bucket_members(high.numpy(), per_group, buckets.numpy(), found.numpy())
    if k > size:
        found = torch.empty(k, dtype=torch.int64)
        _bucket_members(high.numpy(), per_group, buckets.numpy(), found.numpy())
    return found[:k]


def mix(
    xs: list[torch.Tensor],
    base: torch.Tensor,
    out: torch.Tensor,
    plan: list[tuple[int, int, int]],
    per_group: int,
    *,
    lo: list[torch.Tensor | None],
    hi: list[torch.Tensor | None],
    ties: list[torch.Tensor | None],
    masks: list[Any],
    factors: list[torch.Tensor | None],
    weights: list[float],
    consensus: bool,
    normalize: bool,
    divide_by: float,
    lambda_: float,
    threads: int = 1,
) -> None:
    """The streamed mix pass in one loop; arguments as in :mod:`.streamed`. A pass over at
    least :data:`PARALLEL_MIN` elements is split by chunks over ``threads`` (the same
    result: each element is computed as before)."""
    n = len(xs)
    groups = base.numel() // per_group
    lo_a = np.full((n, groups), -1, dtype=np.int32)
    hi_a = np.full((n, groups), -1, dtype=np.int32)
    fac = np.ones((n, groups), dtype=np.float32)
    rescale = np.zeros(n, dtype=np.bool_)
    offsets = np.full((n, len(plan) + 1), -1, dtype=np.int64)
    none_bits = np.zeros(1, dtype=np.uint8)
    bit_data = []
    tie_lists = []
    for i in range(n):
        if lo[i] is not None:
            lo_a[i] = lo[i].view(-1).numpy()  # type: ignore[union-attr]
            hi_a[i] = hi[i].view(-1).numpy()  # type: ignore[union-attr]
        t = ties[i]
        tie_lists.append(t.numpy() if t is not None else np.zeros(0, dtype=np.int64))
        if masks[i] is not None:
            offsets[i] = np.asarray(masks[i].offsets, dtype=np.int64)
            bit_data.append(masks[i].data.numpy())
            if factors[i] is not None:
                fac[i] = factors[i].view(-1).numpy()  # type: ignore[union-attr]
                rescale[i] = True
        else:
            bit_data.append(none_bits)
    plan_a = np.asarray(plan, dtype=np.int64).reshape(-1, 3)
    arrays = (tuple(as_array(x) for x in xs), as_array(base), as_array(out))

    def run(c0: int, c1: int) -> None:
        """Plan chunks ``c0:c1`` (their mask offsets start at column ``c0``)."""
        _mix(
            *arrays,
            plan_a[c0:c1],
            per_group,
            lo_a,
            hi_a,
            tuple(tie_lists),
            tuple(bit_data),
            np.ascontiguousarray(offsets[:, c0:]),
            fac,
            rescale,
            np.asarray(weights, dtype=np.float32),
            np.asarray([consensus, normalize, lambda_ != 1], dtype=np.bool_),
            np.float32(divide_by),
            np.float32(lambda_),
        )

    parts = min(max(1, threads), len(plan))
    if parts <= 1 or base.numel() < PARALLEL_MIN:
        run(0, len(plan))
        return
    cuts = [len(plan) * k // parts for k in range(parts + 1)]
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="darwin-mix") as pool:
        for f in [pool.submit(run, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]:
            f.result()
