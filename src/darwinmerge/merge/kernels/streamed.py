"""The ``streamed_task_arithmetic`` and ``streamed_slerp`` kernels: cache-sized chunks.

Same numbers as :func:`.task_vectors.generalized_task_arithmetic` with the ``none``,
``magnitude`` (TIES) and ``magnitude_outliers`` (breadcrumbs) sparsifiers, without any
full-size float32 temporary. The flat tensor is walked in chunks of ``CHUNK`` elements
(a few hundred KiB of float32 each, so every elementwise step runs out of the L2 cache):

1. **histogram pass** (sparsifying only): per chunk and model, ``delta = x - base`` in
   float32 and the high 16 bits of ``|delta|``'s bit pattern go to one int16 buffer
   (2 bytes per element). For IEEE floats of one sign the bit pattern orders like the
   value, so a 32768-bin histogram per group finds the bucket holding rank ``k``;
2. **select**: the members of that bucket (a few thousand) are recomputed by index and a
   65536-bin histogram of their low 16 bits gives the exact ``k``-th value, how many
   entries lie below it and, in flat order, the positions of the entries equal to it.
   Equal magnitudes are ranked by flat index, exactly as in :mod:`.selection`, so the
   kept count is exact; the tied entries to keep are a slice of that position list;
3. **mix pass**: per chunk, recompute the deltas, drop what lies outside the rank window
   (strict comparisons with the thresholds plus the listed tied positions), apply
   weights, TIES sign consensus, normalisation, lambda and the base, and write the
   output chunk in the output dtype.

Every float operation is the reference's, in the same order, elementwise, so results are
bit-identical to the reference path (tested). DARE (``random_densities``) draws its
Bernoulli masks chunk by chunk from the same generator (the same stream as whole-tensor
draws); its L1 rescale sums are float32 sums per chunk carried in float64, equal to
the reference's to float32 rounding. Slerp's norms and dot product
(:func:`streamed_slerp_coefficients`) are chunked float64 sums.
Not covered (the reference runs): float64, CUDA, ``rescale`` with rank windows,
DELLA, given masks, groups smaller than ``MIN_GROUP`` elements. Where the ``numba``
kernel is allowed (:class:`~darwinmerge.merge.options.KernelContext`), the passes run as the
compiled loops of :mod:`.fused` (the same numbers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from darwinmerge.merge.kernels import fused
from darwinmerge.merge.ops.sparsify import RESCALE_EPS
from darwinmerge.merge.options import KernelContext

__all__ = [
    "CHUNK",
    "MIN_GROUP",
    "kth_by_bits",
    "streamed_combine",
    "streamed_slerp_coefficients",
    "streamed_task_arithmetic",
]

CHUNK = 1 << 17
MIN_GROUP = 1 << 12
#: deterministic merges over many groups run this many elements' worth of whole groups at
#: a time (inputs, high-bits buffers and output of 1M elements fit a 32 MiB L3 cache)
SPAN_ELEMENTS = 1 << 20
_HIGH_BINS = 1 << 15  # sign bit cleared: 15 significant bits in the high half-word
_LOW_BINS = 1 << 16
_ABS_MASK = 0x7FFFFFFF


#: scratch buffers up to this size are kept per thread and reused by the next call: a
#: merge makes thousands of calls (one per expert), and fresh memory costs a page fault
#: per 4 KiB (several microseconds each in a VM) where reused memory costs nothing
SCRATCH_CACHE_BYTES = 32 << 20
_local = threading.local()


def _scratch(key: str, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A ``[size]`` buffer of ``dtype`` for this thread (contents undefined); the same
    storage as the last call with this key when it is large enough and cacheable. Two
    buffers alive at once need two keys; results never come from here."""
    nbytes = size * torch.empty((), dtype=dtype).element_size()
    if nbytes > SCRATCH_CACHE_BYTES or torch.device(device).type != "cpu":
        return torch.empty(size, dtype=dtype, device=device)
    cache: dict[tuple[str, torch.dtype], torch.Tensor] = _local.__dict__.setdefault("bufs", {})
    buf = cache.get((key, dtype))
    if buf is None or buf.numel() < size:
        buf = cache[(key, dtype)] = torch.empty(size, dtype=dtype, device=device)
    return buf[:size]


class _Work:
    """Reused chunk buffers (float32 / bool / int32), sized for one chunk."""

    def __init__(self, n_models: int, size: int, device: torch.device) -> None:
        f32, i32 = torch.float32, torch.int32
        self.base = _scratch("base", size, f32, device)
        self.delta = [_scratch(f"delta{i}", size, f32, device) for i in range(n_models)]
        self.bits = _scratch("bits", size, i32, device)
        self.keep = _scratch("keep", size, i32, device)
        self.tmp = _scratch("tmp", size, i32, device)
        self.mixed = _scratch("mixed", size, f32, device)
        self.divisor = _scratch("divisor", size, f32, device)
        self.high = _scratch("high", size, torch.int16, device)


def _chunks(groups: int, per_group: int) -> list[tuple[int, int, int]]:
    """(flat start, flat end, rows): whole rows when groups are small, else row pieces."""
    out: list[tuple[int, int, int]] = []
    if per_group >= CHUNK:
        for g in range(groups):
            row = g * per_group
            for s in range(0, per_group, CHUNK):
                out.append((row + s, row + min(per_group, s + CHUNK), 1))
        return out
    rows = max(1, CHUNK // per_group)
    for g in range(0, groups, rows):
        r = min(rows, groups - g)
        out.append((g * per_group, (g + r) * per_group, r))
    return out


def _delta(x: torch.Tensor, base_f: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = float32(x) - base_f`` (the reference's copy_ then sub_)."""
    out.copy_(x)
    return out.sub_(base_f)


def kth_by_bits(
    high: torch.Tensor,
    k0: int,
    recompute: Callable[[torch.Tensor], torch.Tensor],
    *,
    compiled: bool = False,
) -> tuple[int, int, torch.Tensor]:
    """Exact ``k0``-th smallest (0-based) of one group of non-negative float32 magnitudes.

    ``high`` holds the high 16 bits of every magnitude's bit pattern (int16, flat group
    order); ``recompute(idx)`` must return the int32 bit patterns of the magnitudes at
    flat indices ``idx``. Returns ``(value bits, #below, positions equal to the value in
    ascending flat order)``. ``compiled``: find the bucket's members in a Numba loop.
    """
    counts = torch.bincount(high, minlength=_HIGH_BINS)
    bucket, below_bucket = _bucket(counts, k0)
    if compiled and fused.AVAILABLE and high.dtype == torch.int16 and high.device.type == "cpu":
        found = torch.tensor([bucket], dtype=torch.int32)
        members = fused.bucket_members(high, 1, found, int(counts[bucket]))
    else:
        members = (high == bucket).nonzero().view(-1)
    return _kth_in_bucket(k0, bucket, below_bucket, members, recompute)


def _bucket(counts: torch.Tensor, k0: int) -> tuple[int, int]:
    """The high-bits bucket holding rank ``k0`` and how many magnitudes lie below it."""
    cumulative = counts.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, torch.tensor([k0]), right=True))
    return bucket, (int(cumulative[bucket - 1]) if bucket > 0 else 0)


def _kth_in_bucket(
    k0: int,
    bucket: int,
    below_bucket: int,
    members: torch.Tensor,
    recompute: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[int, int, torch.Tensor]:
    """:func:`kth_by_bits` from the bucket's members (ascending flat positions)."""
    low = recompute(members) & 0xFFFF
    low_counts = torch.bincount(low, minlength=_LOW_BINS)
    low_cum = low_counts.cumsum(0)
    low_bin = int(torch.searchsorted(low_cum, torch.tensor([k0 - below_bucket]), right=True))
    equal = int(low_counts[low_bin])
    below = below_bucket + int(low_cum[low_bin]) - equal
    return (bucket << 16) | low_bin, below, members[low == low_bin]


def _window(n: int, lo: int, hi: int) -> tuple[int, int]:
    return max(0, lo), min(n, hi)


def streamed_task_arithmetic(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    windows: Sequence[tuple[int, int] | None],
    group_dims_count: int,
    consensus: bool,
    normalize: bool,
    lambda_: float,
    out_dtype: torch.dtype,
    random_densities: Sequence[float] | None = None,
    rescale: bool = False,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    ctx: KernelContext | None = None,
) -> torch.Tensor:
    """Task arithmetic / TIES / breadcrumbs / DARE in chunks; see the module docstring.

    ``windows[i]`` is model ``i``'s kept ascending-rank window ``[lo, hi)`` of ``|delta|``
    per group (``None``: keep everything); ``group_dims_count`` is the number of groups.
    ``random_densities`` (DARE, instead of windows) draws Bernoulli keep masks from
    ``generator``, model by model and chunk by chunk in flat order (the same stream as
    one whole-tensor draw per model); ``rescale`` then applies the per-group L1 rescale.
    ``out`` (contiguous, the base's shape) receives the result in its own dtype.
    ``ctx``: whether the ``numba`` kernel may run and on how many threads (default: no).
    """
    ctx = ctx if ctx is not None else KernelContext()
    numba_on = ctx.uses("numba") and fused.AVAILABLE
    n_models = len(tensors)
    device = base.device
    total = base.numel()
    groups = group_dims_count
    per_group = total // groups
    flat_base = base.reshape(-1)
    flat_x = [t.reshape(-1) for t in tensors]
    span = max(1, SPAN_ELEMENTS // per_group)
    if random_densities is None and span < groups:
        # every statistic is per group: a few groups at a time, so that the passes over
        # their inputs and buffers run out of the CPU's cache, not from memory (the same
        # numbers; random draws keep their whole-tensor order, so DARE is not split)
        result = out if out is not None else torch.empty(base.shape, dtype=out_dtype, device=device)
        flat_out = result.view(-1)
        for g0 in range(0, groups, span):
            part = slice(g0 * per_group, min(groups, g0 + span) * per_group)
            streamed_task_arithmetic(
                [x[part] for x in flat_x],
                base=flat_base[part],
                weights=weights,
                windows=windows,
                group_dims_count=min(groups, g0 + span) - g0,
                consensus=consensus,
                normalize=normalize,
                lambda_=lambda_,
                out_dtype=out_dtype,
                out=flat_out[part],
                ctx=ctx,
            )
        return result
    plan = _chunks(groups, per_group)
    work = _Work(n_models, max(e - s for s, e, _ in plan), device)
    # one loop per pass instead of a torch op per step (the same numbers, see .fused)
    use_fused = numba_on and fused.supported(flat_base, *flat_x)

    lo_bits, hi_bits, tie_keep = _rank_thresholds(
        flat_x, flat_base, windows, plan, work, groups, per_group, use_fused, numba_on
    )
    masks: list[_Bits | None] = [None] * n_models
    factors: list[torch.Tensor | None] = [None] * n_models
    if random_densities is not None:
        if generator is None:
            raise ValueError("random masks need a torch.Generator")
        for i, density in enumerate(random_densities):
            if density < 1:
                masks[i], factors[i] = _draw_masks(
                    flat_x[i],
                    flat_base,
                    plan,
                    work,
                    per_group,
                    density,
                    rescale,
                    generator,
                    numba_on,
                )

    result = out if out is not None else torch.empty(base.shape, dtype=out_dtype, device=device)
    flat_out = result.view(-1)
    total_weight = sum(weights)
    if use_fused and fused.supported(result):
        fused.mix(
            flat_x,
            flat_base,
            flat_out,
            plan,
            per_group,
            lo=lo_bits,
            hi=hi_bits,
            ties=tie_keep,
            masks=masks,
            factors=factors,
            weights=list(weights),
            consensus=consensus,
            normalize=normalize,
            divide_by=total_weight if abs(total_weight) >= 1e-8 else 1.0,
            lambda_=lambda_,
            threads=ctx.threads,
        )
        return result
    one_bits = _float_bits(1.0)
    for c, (s, e, rows) in enumerate(plan):
        m = e - s
        base_f = work.base[:m]
        base_f.copy_(flat_base[s:e])
        g0 = s // per_group
        keep = work.keep[:m]
        tmp = work.tmp[:m]
        deltas = []
        for i in range(n_models):
            d = _delta(flat_x[i][s:e], base_f, work.delta[i][:m])
            d_bits = d.view(torch.int32)
            if lo_bits[i] is not None:
                # all-ones int32 masks: (v - bits) >> 31 is -1 exactly where bits > v
                bits = torch.bitwise_and(d_bits, _ABS_MASK, out=work.bits[:m]).view(rows, -1)
                lo_v = lo_bits[i][g0 : g0 + rows]  # type: ignore[index]
                hi_v = hi_bits[i][g0 : g0 + rows]  # type: ignore[index]
                k2 = keep.view(rows, -1)
                if bool((lo_v >= 0).all()):
                    torch.sub(lo_v, bits, out=k2).bitwise_right_shift_(31)
                else:
                    keep.fill_(-1)
                if bool((hi_v >= 0).all()):
                    t2 = tmp.view(rows, -1)
                    torch.sub(bits, hi_v, out=t2).bitwise_right_shift_(31)
                    keep.bitwise_and_(tmp)
                ties = tie_keep[i]
                if ties is not None and ties.numel():
                    a, b = torch.searchsorted(ties, torch.tensor([s, e])).tolist()
                    if b > a:
                        keep[ties[a:b] - s] = -1
                d_bits.bitwise_and_(keep)
            mask = masks[i]
            if mask is not None:
                d_bits.bitwise_and_(keep.copy_(mask.get(c, m)).neg_())
                factor = factors[i]
                if factor is not None:
                    d.view(rows, -1).mul_(factor[g0 : g0 + rows])
            if weights[i] != 1:
                d.mul_(weights[i])
            deltas.append(d)
        mixed = work.mixed[:m]
        _sum(deltas, mixed)
        if consensus:
            # elected sign: - where the sum is < 0 (adding +0.0 turns -0.0 into +0.0);
            # a nonzero delta survives when its sign bit equals the elected one
            elected = torch.bitwise_right_shift(mixed.add_(0.0).view(torch.int32), 31, out=keep)
            for d in deltas:
                sign = torch.bitwise_right_shift(d.view(torch.int32), 31, out=tmp)
                d.view(torch.int32).bitwise_and_(sign.bitwise_xor_(elected).bitwise_not_())
            _sum(deltas, mixed)
            if normalize:
                divisor = work.divisor[:m].zero_()
                div_bits = divisor.view(torch.int32)
                for d, w in zip(deltas, weights, strict=True):
                    # w where d != 0 else +0.0, added like the reference's add_(d != 0, alpha=w)
                    nz = torch.bitwise_and(d.view(torch.int32), _ABS_MASK, out=tmp)
                    nz.neg_().bitwise_right_shift_(31).bitwise_and_(_float_bits(w))
                    divisor.add_(nz.view(torch.float32))
                # divisor 0 -> 1
                nz = torch.bitwise_and(div_bits, _ABS_MASK, out=tmp).neg_().bitwise_right_shift_(31)
                div_bits.bitwise_and_(nz).bitwise_or_(nz.bitwise_not_().bitwise_and_(one_bits))
                mixed.div_(divisor)
        elif normalize:
            mixed.div_(total_weight if abs(total_weight) >= 1e-8 else 1.0)
        if lambda_ != 1:
            mixed.mul_(lambda_)
        flat_out[s:e].copy_(mixed.add_(base_f))
    return result


#: above this many bytes of int16 high-bits buffer per model, the rank select counts the
#: buckets chunk by chunk and re-walks the tensor for the bucket members instead (one more
#: delta pass; a 1 GiB embedding then needs no 1 GiB buffer per model)
HIGH_BUFFER_BYTES = 128 << 20


def _rank_thresholds(
    flat_x: list[torch.Tensor],
    flat_base: torch.Tensor,
    windows: Sequence[tuple[int, int] | None],
    plan: list[tuple[int, int, int]],
    work: _Work,
    groups: int,
    per_group: int,
    use_fused: bool = False,
    numba_on: bool = False,
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Histogram pass and select, per model: lower / upper threshold bit patterns per
    group ([groups, 1] int32, -1 = no such bound) and the flat positions of the tied
    entries to keep (sorted int64)."""
    n_models = len(flat_x)
    device = flat_base.device
    total = flat_base.numel()
    lo_bits: list[torch.Tensor | None] = [None] * n_models
    hi_bits: list[torch.Tensor | None] = [None] * n_models
    tie_keep: list[torch.Tensor | None] = [None] * n_models
    sparse = [
        i
        for i, w in enumerate(windows)
        if w is not None and _window(per_group, *w) != (0, per_group)
    ]
    if not sparse:
        return lo_bits, hi_bits, tie_keep

    loaded: list[tuple[int, int]] = []  # the chunk whose base is in work.base

    def high_bits(i: int, s: int, e: int) -> torch.Tensor:
        m = e - s
        if use_fused:
            return fused.high_bits(flat_x[i][s:e], flat_base[s:e], work.high[:m])
        base_f = work.base[:m]
        if loaded != [(s, e)]:  # the base once per chunk, not once per model
            base_f.copy_(flat_base[s:e])
            loaded[:] = [(s, e)]
        d = _delta(flat_x[i][s:e], base_f, work.delta[0][:m])
        bits = torch.bitwise_and(d.view(torch.int32), _ABS_MASK, out=work.bits[:m])
        return bits.bitwise_right_shift_(16)

    # (model, rank) -> the rank's targets: k0 for every group (bounds that are not
    # needed: hi <= lo keeps nothing, lo == 0 / hi == per_group have no bound)
    targets: dict[int, list[tuple[int, int, bool]]] = {}
    for i in sparse:
        lo, hi = _window(per_group, *windows[i])  # type: ignore[misc]
        wanted = []
        if hi > lo:
            if lo > 0:
                wanted.append((lo, lo, True))
            if hi < per_group:
                wanted.append((hi - 1, lo, False))
        targets[i] = wanted
    buffered = total * 2 <= HIGH_BUFFER_BYTES
    high: dict[int, torch.Tensor] = {}
    found: dict[tuple[int, int, int], tuple[int, int, torch.Tensor]] = {}
    if buffered:
        high = {i: _scratch(f"high{i}", total, torch.int16, device) for i in sparse}
        for s, e, _ in plan:
            for i in sparse:
                if use_fused:
                    fused.high_bits(flat_x[i][s:e], flat_base[s:e], high[i][s:e])
                else:
                    high[i][s:e].copy_(high_bits(i, s, e))
    else:
        found = _members_streamed(high_bits, targets, plan, groups, per_group, use_fused)

    for i in sparse:
        lo, hi = _window(per_group, *windows[i])  # type: ignore[misc]
        lows = torch.full((groups, 1), -1, dtype=torch.int32)
        highs = torch.full((groups, 1), -1, dtype=torch.int32)
        keep_positions = []
        for g in range(groups):
            row = g * per_group

            def recompute(idx: torch.Tensor, row: int = row, i: int = i) -> torch.Tensor:
                at = idx + row
                d = flat_x[i][at].to(torch.float32) - flat_base[at].to(torch.float32)
                return d.view(torch.int32).bitwise_and_(_ABS_MASK).to(torch.int64)

            if hi <= lo:
                lows[g] = highs[g] = 0  # keep nothing: strict (> 0) and (< 0) is empty
                continue
            for k0, rank_lo, is_low in targets[i]:
                if buffered:
                    value, below, equal_pos = kth_by_bits(
                        high[i][row : row + per_group], k0, recompute, compiled=numba_on
                    )
                else:
                    bucket, below_bucket, members = found[(i, g, k0)]
                    value, below, equal_pos = _kth_in_bucket(
                        k0, bucket, below_bucket, members, recompute
                    )
                (lows if is_low else highs)[g] = value
                ranks = below + torch.arange(equal_pos.numel())
                keep_positions.append(equal_pos[(ranks >= rank_lo) & (ranks < hi)] + row)
        lo_bits[i] = lows
        hi_bits[i] = highs
        no_ties = torch.empty(0, dtype=torch.int64)
        if len(keep_positions) == groups:  # one bound: already sorted and distinct
            tie_keep[i] = torch.cat(keep_positions)
        else:
            tie_keep[i] = torch.cat(keep_positions).unique() if keep_positions else no_ties
    return lo_bits, hi_bits, tie_keep


def _members_streamed(
    high_bits: Callable[[int, int, int], torch.Tensor],
    targets: dict[int, list[tuple[int, int, bool]]],
    plan: list[tuple[int, int, int]],
    groups: int,
    per_group: int,
    use_fused: bool = False,
) -> dict[tuple[int, int, int], tuple[int, int, torch.Tensor]]:
    """Without a high-bits buffer: count every group's buckets chunk by chunk, pick the
    bucket of each target rank, then walk the chunks again collecting that bucket's
    members. Returns ``(model, group, k0) -> (bucket, #below it, member positions in the
    group, ascending)``, what :func:`kth_by_bits` finds from a buffer."""
    models = [i for i, t in targets.items() if t]
    counts = {i: torch.zeros(groups, _HIGH_BINS, dtype=torch.int64) for i in models}
    for s, e, rows in plan:
        g0 = s // per_group
        for i in models:
            hb = high_bits(i, s, e).view(rows, -1)
            if use_fused:  # int16 high bits: no room for the row offsets
                hb = hb.to(torch.int32)
            if rows > 1:
                hb = hb + (torch.arange(rows, dtype=torch.int32) * _HIGH_BINS).unsqueeze(1)
            binned = torch.bincount(hb.reshape(-1), minlength=rows * _HIGH_BINS)
            counts[i][g0 : g0 + rows] += binned.view(rows, _HIGH_BINS)
    buckets: dict[tuple[int, int], torch.Tensor] = {}
    below: dict[tuple[int, int, int], int] = {}
    ranks = {i: sorted({k0 for k0, _, _ in targets[i]}) for i in models}
    for i in models:
        for k0 in ranks[i]:
            column = torch.empty(groups, dtype=torch.int32)
            for g in range(groups):
                bucket, under = _bucket(counts[i][g], k0)
                column[g] = bucket
                below[(i, g, k0)] = under
            buckets[(i, k0)] = column
    del counts
    hits: dict[tuple[int, int], list[torch.Tensor]] = {key: [] for key in buckets}
    for s, e, rows in plan:
        g0 = s // per_group
        for i in models:
            hb = high_bits(i, s, e).view(rows, -1)
            for k0 in ranks[i]:
                wanted = buckets[(i, k0)][g0 : g0 + rows]
                if use_fused:
                    hits[(i, k0)].append(s + fused.bucket_members(hb.view(-1), rows, wanted))
                    continue
                r, c = (hb == wanted.unsqueeze(1)).nonzero(as_tuple=True)
                hits[(i, k0)].append(s + r * hb.shape[1] + c)  # flat positions, ascending
    found: dict[tuple[int, int, int], tuple[int, int, torch.Tensor]] = {}
    for (i, k0), parts in hits.items():
        flat = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
        group_of = torch.div(flat, per_group, rounding_mode="floor")
        sizes = torch.bincount(group_of, minlength=groups).tolist()
        for g, members in enumerate(torch.split(flat - group_of * per_group, sizes)):
            found[(i, g, k0)] = (int(buckets[(i, k0)][g]), below[(i, g, k0)], members)
    return found


def _draw_masks(
    x: torch.Tensor,
    base: torch.Tensor,
    plan: list[tuple[int, int, int]],
    work: _Work,
    per_group: int,
    density: float,
    rescale: bool,
    generator: torch.Generator,
    numba_on: bool = False,
) -> tuple[_Bits, torch.Tensor | None]:
    """Bernoulli(density) keep mask of one model, one bit per element (:class:`_Bits`:
    1/8 byte per element), and its L1 rescale factors.

    Factors are ``sum|delta| / sum|kept delta|`` per group ([groups, 1], float32; 1 where
    either sum is below :data:`RESCALE_EPS`), summed in float32 per chunk (the reference
    sums in float32) and carried across chunks in float64.
    """
    size = work.mixed.numel()
    probs = _scratch("probs", size, torch.float32, generator.device).fill_(density)
    drawn = _scratch("drawn", size, torch.float32, generator.device)
    kept = _scratch("kept", size, torch.bool, x.device)
    packed = _Bits(plan, x.device)
    groups = x.numel() // per_group
    before = torch.zeros(groups, dtype=torch.float64) if rescale else None
    after = torch.zeros(groups, dtype=torch.float64) if rescale else None
    use_fused = numba_on and fused.supported(x, base)
    # the generator's mt19937 stream drawn in a compiled loop (the same numbers)
    stream = fused.MTStream(generator) if use_fused and generator.device.type == "cpu" else None
    try:
        for c, (s, e, rows) in enumerate(plan):
            m = e - s
            chunk = kept[:m]
            # torch.bernoulli(probs) on a CPU generator keeps exactly where the float32
            # uniform torch.rand draws is below the probability (sparsify.bernoulli_draw)
            if generator.device.type == "cpu":
                if stream is not None:  # draw, pack the bits (and add the L1 sums) in one loop
                    g0 = s // per_group
                    sums = None
                    if before is not None and after is not None:
                        sums = (before[g0 : g0 + rows], after[g0 : g0 + rows])
                    o0, o1 = packed.offsets[c], packed.offsets[c + 1]
                    stream.keep_bits(density, packed.data[o0:o1], x[s:e], base[s:e], rows, sums)
                    continue
                torch.rand(m, generator=generator, out=drawn[:m])
                torch.lt(drawn[:m], density, out=chunk)
            else:
                chunk.copy_(torch.bernoulli(probs[:m], generator=generator, out=drawn[:m]))
            packed.put(c, chunk)
            if before is None or after is None:
                continue
            base_f = work.base[:m]
            base_f.copy_(base[s:e])
            d = _delta(x[s:e], base_f, work.delta[0][:m])
            g0 = s // per_group
            mag = torch.abs(d, out=work.mixed[:m]).view(rows, -1)
            # float32 sums per chunk (torch sums in cascade, as the reference's whole-group
            # float32 sums), carried across chunks in float64
            before[g0 : g0 + rows] += mag.sum(dim=1)
            mag.view(-1).mul_(chunk)
            after[g0 : g0 + rows] += mag.sum(dim=1)
    finally:
        if stream is not None:
            stream.close()
    if before is None or after is None:
        return packed, None
    b32, a32 = before.float(), after.float()
    small = (b32 < RESCALE_EPS) | (a32 < RESCALE_EPS)
    factor = torch.where(small, torch.ones_like(b32), b32 / a32.masked_fill(small, 1))
    return packed, factor.view(-1, 1).to(x.device)


_SHIFTS = torch.arange(8, dtype=torch.uint8)


class _Bits:
    """One model's keep mask, one bit per element, in one preallocated buffer (chunk ``c``
    of the plan at ``offsets[c]``; bit ``j`` of byte ``i`` is element ``8 i + j``).

    Packing and unpacking use two reused scratch buffers: no allocation per chunk (a
    small kept tensor per chunk between freed temporaries fragmented the heap by up to
    5x the tensor's size).
    """

    def __init__(self, plan: list[tuple[int, int, int]], device: torch.device) -> None:
        self.offsets = [0]
        for s, e, _ in plan:
            self.offsets.append(self.offsets[-1] + (e - s + 7) // 8)
        self.data = torch.empty(self.offsets[-1], dtype=torch.uint8, device=device)
        widest = 8 * max(b - a for a, b in zip(self.offsets, self.offsets[1:], strict=False))
        self._wide = _scratch("bits-wide", widest, torch.uint8, device)
        self._shifted = _scratch("bits-shifted", widest, torch.uint8, device)

    def put(self, c: int, bits: torch.Tensor) -> None:
        """Store chunk ``c``'s mask (bool or 0 / 1, ``[m]``)."""
        o0, o1 = self.offsets[c], self.offsets[c + 1]
        m, nb = bits.numel(), o1 - o0
        wide = self._wide[: nb * 8]
        wide[m:].zero_()
        wide[:m].copy_(bits)
        shifted = self._shifted[: nb * 8].view(nb, 8)
        torch.bitwise_left_shift(wide.view(nb, 8), _SHIFTS, out=shifted)
        torch.sum(shifted, dim=1, dtype=torch.uint8, out=self.data[o0:o1])

    def get(self, c: int, m: int) -> torch.Tensor:
        """Chunk ``c``'s mask as uint8 0 / 1 (a scratch view: valid until the next get)."""
        o0, o1 = self.offsets[c], self.offsets[c + 1]
        nb = o1 - o0
        wide = self._wide[: nb * 8].view(nb, 8)
        torch.bitwise_right_shift(self.data[o0:o1].unsqueeze(1), _SHIFTS, out=wide)
        return wide.bitwise_and_(1).view(-1)[:m]


def _float_bits(value: float) -> int:
    """The int32 bit pattern of ``value`` as a float32."""
    return int(torch.tensor([value], dtype=torch.float32).view(torch.int32))


def _sum(deltas: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``out = deltas[0] + deltas[1] + ...`` (left to right, like ``sum(dim=0)``)."""
    if len(deltas) == 1:
        return out.copy_(deltas[0])
    torch.add(deltas[0], deltas[1], out=out)
    for d in deltas[2:]:
        out.add_(d)
    return out


def streamed_slerp_coefficients(
    a: torch.Tensor, b: torch.Tensor, groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group ``|a|``, ``|b|`` and ``<a, b>`` ([groups, 1], float32), summed chunk by
    chunk in float64 from float32 copies of the inputs (no full-size temporaries)."""
    per_group = a.numel() // groups
    plan = _chunks(groups, per_group)
    size = max(e - s for s, e, _ in plan)
    x = _scratch("slerp-x", size, torch.float32, a.device)
    y = _scratch("slerp-y", size, torch.float32, a.device)
    sq_x = torch.zeros(groups, dtype=torch.float64, device=a.device)
    sq_y = torch.zeros(groups, dtype=torch.float64, device=a.device)
    dot = torch.zeros(groups, dtype=torch.float64, device=a.device)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    for s, e, rows in plan:
        m = e - s
        xs = x[:m].copy_(flat_a[s:e]).view(rows, -1)
        ys = y[:m].copy_(flat_b[s:e]).view(rows, -1)
        g0 = s // per_group
        sq_x[g0 : g0 + rows] += torch.linalg.vecdot(xs, xs, dim=1).double()
        sq_y[g0 : g0 + rows] += torch.linalg.vecdot(ys, ys, dim=1).double()
        dot[g0 : g0 + rows] += torch.linalg.vecdot(xs, ys, dim=1).double()
    return (
        sq_x.sqrt().float().view(-1, 1),
        sq_y.sqrt().float().view(-1, 1),
        dot.float().view(-1, 1),
    )


def streamed_combine(
    a: torch.Tensor,
    b: torch.Tensor,
    coef_a: torch.Tensor,
    coef_b: torch.Tensor,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``coef_a * a + coef_b * b`` per group ([groups, 1] float32 coefficients) in
    float32, chunk by chunk, written in ``out_dtype`` (the reference's mul then addcmul_),
    or into ``out`` (contiguous, ``a``'s shape) in its dtype."""
    groups = coef_a.shape[0]
    per_group = a.numel() // groups
    plan = _chunks(groups, per_group)
    size = max(e - s for s, e, _ in plan)
    x = _scratch("slerp-x", size, torch.float32, a.device)
    y = _scratch("slerp-y", size, torch.float32, a.device)
    r = _scratch("slerp-r", size, torch.float32, a.device)
    result = out if out is not None else torch.empty(a.shape, dtype=out_dtype, device=a.device)
    flat_out = result.view(-1)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    for s, e, rows in plan:
        m = e - s
        g0 = s // per_group
        xs = x[:m].copy_(flat_a[s:e]).view(rows, -1)
        ys = y[:m].copy_(flat_b[s:e]).view(rows, -1)
        rs = torch.mul(xs, coef_a[g0 : g0 + rows], out=r[:m].view(rows, -1))
        rs.addcmul_(ys, coef_b[g0 : g0 + rows])
        flat_out[s:e].copy_(r[:m])
    return result
