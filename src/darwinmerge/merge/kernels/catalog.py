"""The kernels' registrations: which methods each computes, on which calls."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from darwinmerge.merge.kernels import streamed
from darwinmerge.merge.kernels.api import KERNELS, Kernel, kernel
from darwinmerge.merge.kernels.streamed import (
    streamed_combine,
    streamed_slerp_coefficients,
    streamed_task_arithmetic,
)
from darwinmerge.merge.ops.api import MethodCall, deliver
from darwinmerge.merge.ops.catalog import TASK_METHODS
from darwinmerge.merge.ops.groups import compute_dtype, group_count
from darwinmerge.merge.ops.interpolation import slerp_coefficients
from darwinmerge.merge.ops.task_vectors import Sparsifier, rank_window
from darwinmerge.merge.options import KERNEL_NAMES, KernelContext

__all__ = ["streamable", "streamed_gta"]


def _large_cpu_float32(
    first: torch.Tensor, tensors: Sequence[torch.Tensor], group_dims: int
) -> bool:
    """float32 maths on one CPU device, groups of at least ``MIN_GROUP`` elements."""
    if compute_dtype(first) != torch.float32 or first.device.type != "cpu":
        return False
    if any(t.device != first.device for t in tensors):
        return False
    groups = group_count(first.shape, group_dims)
    return first.numel() // max(1, groups) >= streamed.MIN_GROUP


def streamable(
    sparsifier: Sparsifier,
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    group_dims: int,
    *,
    rescale: bool = False,
    generator: torch.Generator | None = None,
) -> bool:
    """Whether :func:`streamed_gta` computes this merge: float32 maths on the CPU, groups
    of at least ``MIN_GROUP`` elements, no DELLA, no rescale of rank windows, DARE with
    a CPU generator."""
    if sparsifier is Sparsifier.random:
        if generator is None or generator.device.type != "cpu":
            return False
    elif sparsifier is Sparsifier.della or (rescale and sparsifier is not Sparsifier.none):
        return False
    return _large_cpu_float32(base, tensors, group_dims)


def streamed_gta(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float] | None = None,
    gammas: Sequence[float] | None = None,
    sparsifier: Sparsifier = Sparsifier.none,
    consensus: bool = False,
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    group_dims: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
    ctx: KernelContext | None = None,
) -> torch.Tensor:
    """:func:`~darwinmerge.merge.ops.generalized_task_arithmetic` (its arguments, on a
    :func:`streamable` merge) through :func:`.streamed.streamed_task_arithmetic`: the same
    numbers (DARE with ``rescale``: to float32 rounding, its L1 sums are chunked)."""
    n = len(tensors)
    groups = group_count(base.shape, group_dims)
    per_group = base.numel() // groups
    random = sparsifier is Sparsifier.random
    density = list(densities) if densities is not None else [1.0] * n
    gamma = list(gammas) if gammas is not None else [0.0] * n
    contiguous = out is not None and out.is_contiguous() and out.device == base.device
    direct = out if contiguous and out.dtype == base.dtype else None  # type: ignore[union-attr]
    result = streamed_task_arithmetic(
        tensors,
        base=base,
        weights=list(weights),
        windows=[
            None if random else rank_window(sparsifier, per_group, d, g)
            for d, g in zip(density, gamma, strict=True)
        ],
        group_dims_count=groups,
        consensus=consensus,
        normalize=normalize,
        lambda_=lambda_,
        out_dtype=base.dtype,
        random_densities=density if random else None,
        rescale=rescale,
        generator=generator,
        out=direct,
        ctx=ctx,
    )
    return deliver(result, out)


def _task_accepts(call: MethodCall) -> bool:
    sparsifier, _ = TASK_METHODS[call.method.name]
    assert call.base is not None  # task methods need a base (prepare_call checks)
    rescale = bool(call.params.get("rescale", False))
    return streamable(
        sparsifier,
        call.base,
        call.tensors,
        call.group_dims,
        rescale=rescale,
        generator=call.generator,
    )


@kernel(
    "streamed_task_arithmetic",
    [m for m, (s, _) in TASK_METHODS.items() if s is not Sparsifier.della],
    accepts=_task_accepts,
)
def _streamed_task(call: MethodCall, ctx: KernelContext, out: torch.Tensor | None) -> torch.Tensor:
    assert call.base is not None
    sparsifier, consensus = TASK_METHODS[call.method.name]
    n = len(call.tensors)
    return streamed_gta(
        call.tensors,
        base=call.base,
        weights=call.column("weight") or [1.0] * n,
        densities=call.column("density"),
        gammas=call.column("gamma"),
        sparsifier=sparsifier,
        consensus=consensus,
        normalize=bool(call.params["normalize"]),
        rescale=bool(call.params.get("rescale", False)),
        lambda_=float(call.params["lambda"]),
        group_dims=call.group_dims,
        generator=call.generator,
        out=out,
        ctx=ctx,
    )


def _slerp_accepts(call: MethodCall) -> bool:
    return _large_cpu_float32(call.tensors[0], call.tensors, call.group_dims)


@kernel("streamed_slerp", ["slerp"], accepts=_slerp_accepts, exact=False)
def _streamed_slerp(call: MethodCall, ctx: KernelContext, out: torch.Tensor | None) -> torch.Tensor:
    a, b = call.tensors
    groups = group_count(a.shape, call.group_dims)
    # norms and dot summed chunk by chunk (float64 accumulators): no full-size float32
    # copies; agrees with the whole-tensor sums to float32 rounding
    norm_x, norm_y, dot = streamed_slerp_coefficients(a, b, groups)
    coef_x, coef_y = slerp_coefficients(norm_x, norm_y, dot, t=float(call.params["t"]))
    direct = out if out is not None and call.check_out(out) else None
    return deliver(streamed_combine(a, b, coef_x, coef_y, a.dtype, out=direct), out)


# the numba kernel runs inside streamed_task_arithmetic (see .streamed and .fused)
KERNELS.add(
    "numba",
    Kernel("numba", frozenset(), lambda call: False, lambda call, ctx, out: call.run(out)),
)
if set(KERNELS) != set(KERNEL_NAMES):  # pragma: no cover - a developer's slip
    raise RuntimeError("darwinmerge.merge.options.KERNEL_NAMES must list every kernel")
