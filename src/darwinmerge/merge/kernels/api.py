"""The kernel registry and the dispatch the executor calls (see :mod:`.` for the list)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from darwinmerge.merge.ops.api import MethodCall, prepare_call
from darwinmerge.merge.options import KernelContext
from darwinmerge.registry import Registry

__all__ = ["KERNELS", "Kernel", "kernel", "run_call", "run_method"]


@dataclass(frozen=True)
class Kernel:
    """A fast implementation of some methods: ``accepts(call)`` says whether it computes
    this call, ``run(call, ctx, out)`` computes it (into ``out`` when given). ``exact``:
    bit-identical to the reference (else equal to float32 rounding)."""

    name: str
    methods: frozenset[str]
    accepts: Callable[[MethodCall], bool]
    run: Callable[[MethodCall, KernelContext, torch.Tensor | None], torch.Tensor]
    exact: bool = True


KERNELS: Registry[Kernel] = Registry("kernel")


def kernel(
    name: str,
    methods: Sequence[str],
    *,
    accepts: Callable[[MethodCall], bool],
    exact: bool = True,
) -> Callable[[Callable[..., torch.Tensor]], Kernel]:
    """Register the decorated ``run(call, ctx, out)`` as kernel ``name``."""

    def decorator(run: Callable[..., torch.Tensor]) -> Kernel:
        made = Kernel(name, frozenset(methods), accepts, run, exact)
        KERNELS.add(name, made)
        return made

    return decorator


def run_call(
    call: MethodCall, ctx: KernelContext | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """A validated call through the first kernel that ``ctx`` allows and that accepts it,
    else the reference (``out`` as in :func:`~darwinmerge.merge.ops.apply_method`)."""
    ctx = ctx if ctx is not None else KernelContext()
    for kernel_name in KERNELS:
        chosen = KERNELS.get(kernel_name)
        if call.method.name in chosen.methods and ctx.uses(kernel_name) and chosen.accepts(call):
            return chosen.run(call, ctx, out)
    return call.run(out)


def run_method(
    name: str,
    tensors: Sequence[torch.Tensor],
    *,
    ctx: KernelContext | None = None,
    out: torch.Tensor | None = None,
    **arguments: Any,
) -> torch.Tensor:
    """:func:`~darwinmerge.merge.ops.apply_method` (its keyword arguments: ``base=``,
    ``model_params=``, ``params=``, ``group_dims=``, ``generator=``) through
    :func:`run_call`."""
    return run_call(prepare_call(name, tensors, **arguments), ctx, out)
