"""Group layout and precision policy shared by every merge op.

A tensor of shape ``[*G, *S]`` with ``group_dims = len(G)`` holds ``prod(G)``
independent groups of shape ``S`` (experts, gate/up halves ...). Every statistic an op
computes (norms, angles, top-k thresholds, rescale factors) is taken per group, so the
result equals running the op on each group separately. ``group_dims=0`` is one group:
the whole tensor, which is mergekit's per-tensor behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from darwinmerge.errors import ConfigError, MergeError

__all__ = ["as_groups", "by_group", "check_inputs", "compute_dtype", "group_count"]


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """float64 when the reference input is float64, else float32."""
    if not reference.is_floating_point():
        raise MergeError(f"merge inputs must be floating point, got {reference.dtype}")
    return torch.float64 if reference.dtype == torch.float64 else torch.float32


def group_count(shape: torch.Size, group_dims: int) -> int:
    return math.prod(shape[:group_dims])


def as_groups(x: torch.Tensor, group_dims: int) -> torch.Tensor:
    """View (copy only when not viewable) ``x`` as ``[groups, elements_per_group]``."""
    return x.reshape(group_count(x.shape, group_dims), -1)


def by_group(x: torch.Tensor, group_dims: int) -> torch.Tensor:
    """View ``x`` (shape ``[*G, *S]``) as ``[prod(G), *S]``: one leading group axis, each
    group keeping its own shape (rows and columns stay rows and columns)."""
    return x.reshape(group_count(x.shape, group_dims), *x.shape[group_dims:])


def check_inputs(
    tensors: Sequence[torch.Tensor], group_dims: int, *, base: torch.Tensor | None = None
) -> None:
    """Same shape everywhere, floating point, a valid ``group_dims`` and non-empty groups."""
    every = list(tensors) + ([base] if base is not None else [])
    if not every:
        raise MergeError("a merge needs at least one input tensor")
    shapes = [tuple(t.shape) for t in every]
    if len(set(shapes)) != 1:
        raise MergeError(f"merge inputs differ in shape: {shapes}; all inputs must match")
    for t in every:
        compute_dtype(t)
    first = every[0]
    if not isinstance(group_dims, int) or group_dims < 0 or group_dims > first.ndim:
        raise ConfigError(
            f"group_dims={group_dims!r} must be an int in [0, {first.ndim}] "
            f"for a tensor of shape {tuple(first.shape)}"
        )
    if first.numel() == 0:
        raise MergeError(f"cannot merge an empty tensor of shape {tuple(first.shape)}")
