"""Task-vector methods: task arithmetic, TIES, DARE, breadcrumbs, DELLA.

One generalised procedure (mergekit 0.1.5 ``generalized_task_arithmetic.py``) with a
sparsifier and an optional sign consensus:

1. ``delta_i = x_i - base`` for every model ``i`` (base excluded from the model list);
2. sparsify ``delta_i`` with its ``density`` (per group, see :mod:`.sparsify`), L1-rescale
   when ``rescale``;
3. ``delta_i *= weight_i``;
4. consensus "sum" (TIES): per element the elected sign is ``+`` where
   ``sum_i delta_i >= 0`` else ``-``; ``keep_i = sign(delta_i) == elected`` (zeros never
   match); ``mixed = sum_i keep_i delta_i``, ``divisor = sum_i keep_i weight_i`` (0 -> 1).
   Without consensus: ``mixed = sum_i delta_i``, ``divisor = sum_i weight_i`` (|.| < 1e-8 -> 1);
5. ``mixed /= divisor`` when ``normalize``; ``mixed *= lambda`` when ``lambda != 1``;
6. result ``base + mixed``.

Random sparsifiers take a ``torch.Generator``; the masks for model ``i`` are drawn for the
whole tensor in one call, models in order, skipping models with density >= 1 (as
mergekit does). ``masks`` may be given instead, one per model (``None`` = keep all),
which makes the deterministic part testable against any reference.

This is the reference: whole-tensor float32 deltas, no fast path. The
``streamed_task_arithmetic`` kernel (:mod:`darwinmerge.merge.kernels`) computes the same
numbers in cache-sized chunks where the executor's options allow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge.ops.groups import as_groups, check_inputs, compute_dtype
from darwinmerge.merge.ops.sparsify import (
    apply_mask_,
    bernoulli_mask,
    della_mask,
    magnitude_mask,
    outlier_mask,
)

__all__ = ["Sparsifier", "generalized_task_arithmetic", "draw_masks", "rank_window"]


class Sparsifier(StrEnum):
    none = "none"
    magnitude = "magnitude"
    random = "random"
    outliers = "magnitude_outliers"
    della = "della_magprune"

    @property
    def random_masks(self) -> bool:
        return self in (Sparsifier.random, Sparsifier.della)


def _per_model(values: Sequence[float] | None, n: int, name: str, default: float) -> list[float]:
    if values is None:
        return [default] * n
    if len(values) != n:
        raise ConfigError(f"{len(values)} values of {name!r} for {n} models")
    return [float(v) for v in values]


def _mask_for(
    sparsifier: Sparsifier,
    delta: torch.Tensor,
    group_dims: int,
    density: float,
    gamma: float,
    epsilon: float,
    generator: torch.Generator | None,
) -> torch.Tensor | None:
    if sparsifier is Sparsifier.none:
        return None
    if sparsifier is Sparsifier.magnitude:
        return magnitude_mask(as_groups(delta, group_dims), density)
    if sparsifier is Sparsifier.outliers:
        return outlier_mask(as_groups(delta, group_dims), density, gamma)
    if generator is None:
        raise ConfigError(f"{sparsifier.value} sparsification needs a torch.Generator")
    if sparsifier is Sparsifier.random:
        return bernoulli_mask(
            delta.shape, density, generator, dtype=delta.dtype, device=delta.device
        )
    return della_mask(delta, group_dims, density, epsilon, generator)


def rank_window(
    sparsifier: Sparsifier, n: int, density: float, gamma: float
) -> tuple[int, int] | None:
    """Kept ascending-rank window of ``|delta|`` per group (as in :mod:`.sparsify`)."""
    if sparsifier is Sparsifier.none or density >= 1:
        return None
    if sparsifier is Sparsifier.magnitude:
        k = max(1, int(density * n))
        return n - k, n
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    return n_bot, n_bot + target


def draw_masks(
    sparsifier: Sparsifier,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    densities: Sequence[float],
    epsilons: Sequence[float] | None = None,
    group_dims: int = 0,
    generator: torch.Generator,
) -> list[torch.Tensor | None]:
    """The random masks a DARE/DELLA merge with this generator state would use."""
    dtype = compute_dtype(base)
    eps = _per_model(epsilons, len(tensors), "epsilon", 0.0)
    masks: list[torch.Tensor | None] = []
    for x, density, epsilon in zip(tensors, densities, eps, strict=True):
        delta = x.to(dtype) - base.to(dtype)
        masks.append(_mask_for(sparsifier, delta, group_dims, density, 0.0, epsilon, generator))
    return masks


def generalized_task_arithmetic(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float] | None = None,
    gammas: Sequence[float] | None = None,
    epsilons: Sequence[float] | None = None,
    sparsifier: Sparsifier = Sparsifier.none,
    consensus: bool = False,
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    group_dims: int = 0,
    generator: torch.Generator | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Merge task vectors ``tensors[i] - base``; see the module docstring for the maths.

    ``out`` (the base's shape) receives the result (cast to its dtype)."""
    check_inputs(tensors, group_dims, base=base)
    n = len(tensors)
    weight = _per_model(weights, n, "weight", 1.0)
    density = _per_model(densities, n, "density", 1.0)
    gamma = _per_model(gammas, n, "gamma", 0.0)
    epsilon = _per_model(epsilons, n, "epsilon", 0.0)
    if masks is not None and len(masks) != n:
        raise ConfigError(f"{len(masks)} masks for {n} models")
    dtype = compute_dtype(base)
    base_c = base.to(dtype)

    deltas = torch.empty((n, *base.shape), dtype=dtype, device=base.device)
    for i, x in enumerate(tensors):
        delta = deltas[i]
        delta.copy_(x).sub_(base_c)
        if masks is not None:
            mask = masks[i]
        else:
            mask = _mask_for(
                sparsifier, delta, group_dims, density[i], gamma[i], epsilon[i], generator
            )
        if mask is not None:
            groups = as_groups(delta, group_dims)
            apply_mask_(groups, mask.reshape(groups.shape), rescale=rescale)
            del mask
        if weight[i] != 1:
            delta.mul_(weight[i])

    if consensus:
        positive = deltas.sum(dim=0) >= 0
        for i in range(n):
            # drop entries whose sign disagrees with the elected one (zeros stay zero)
            deltas[i].mul_((deltas[i] > 0).eq_(positive))
        del positive
        mixed = deltas.sum(dim=0)
        if normalize:
            # every surviving nonzero entry agrees with the elected sign, so keep_i == (d_i != 0)
            divisor = torch.zeros_like(base_c)
            for i in range(n):
                divisor.add_(deltas[i].ne(0), alpha=weight[i])
            mixed.div_(divisor.masked_fill_(divisor == 0, 1))
    else:
        mixed = deltas.sum(dim=0)
        if normalize:
            total = sum(weight)
            mixed.div_(total if abs(total) >= 1e-8 else 1.0)
    del deltas
    if lambda_ != 1:
        mixed.mul_(lambda_)
    result = mixed.add_(base_c).to(out_dtype or base.dtype)
    return out.copy_(result) if out is not None else result
