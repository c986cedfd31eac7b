"""Trimmed interpolation of two parents: the seed genome's ``density_a`` / ``density_b``.

Two methods, each a lerp from parent A (``t = 0``) to parent B (``t = 1``) whose
*differences* are trimmed per group (per expert and projection for MoE tensors) by
magnitude before they are applied. ``K_d(x)`` keeps the ``k = max(1, int(d * n))``
largest ``|x|`` of each group of ``n`` entries (ties broken by position, so exactly ``k``)
and zeroes the rest; ``K_1`` is the identity.

* ``trimmed_lerp`` (no base), with ``D = B - A``::

      child = 1/2 [A + t K_{d_b}(B - A)] + 1/2 [B + (1 - t) K_{d_a}(A - B)]

  Each parent moves towards the other by its share, and only along the ``d`` largest
  differences of each group; where a difference is trimmed on both sides the child takes
  the plain average ``(A + B) / 2``. Both trims rank the same ``|D|``, so with
  ``d_a = d_b`` it is ``(A + B)/2 + (t - 1/2) K_d(D)``.
* ``trimmed_task_lerp`` (with a base), task vectors ``tau_A = A - base``,
  ``tau_B = B - base``::

      child = base + (1 - t) K_{d_a}(tau_A) + t K_{d_b}(tau_B)

  (TIES-style trimming of each parent's own fine-tuning delta, without sign election.)

With ``d_a = d_b = 1`` both return ``lerp(A, B, t)`` exactly (the same fused pass as
``linear`` with weights ``1 - t``, ``t``). Parameters: ``t`` (global, in [0, 1]) and
``density`` per model (in (0, 1], default 1): the first model's is ``d_a``, the second's
``d_b``. Computation in float32 (float64 for float64 inputs), result in A's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge.methods import implement
from darwinmerge.merge.ops.groups import as_groups, check_inputs, compute_dtype
from darwinmerge.merge.ops.interpolation import linear
from darwinmerge.merge.ops.sparsify import magnitude_mask

__all__ = ["trimmed_lerp", "trimmed_task_lerp"]


def _trim_(delta2d: torch.Tensor, density: float) -> torch.Tensor:
    """``K_density`` in place on a ``[groups, n]`` view; returns it."""
    mask = magnitude_mask(delta2d, density)
    if mask is not None:
        delta2d.mul_(mask)
    return delta2d


def trimmed_lerp(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    t: float,
    density_a: float = 1.0,
    density_b: float = 1.0,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``1/2 [A + t K_b(B - A)] + 1/2 [B + (1 - t) K_a(A - B)]`` per group (module doc)."""
    check_inputs([a, b], group_dims)
    _check(t, density_a, density_b)
    if density_a >= 1 and density_b >= 1:
        return linear([a, b], weights=[1 - t, t], normalize=False, out_dtype=out_dtype)
    dtype = compute_dtype(a)
    x, y = as_groups(a.to(dtype), group_dims), as_groups(b.to(dtype), group_dims)
    diff = y - x  # D = B - A
    toward_b = _trim_(diff.clone(), density_b).mul_(t)  # t K_b(B - A)
    toward_a = _trim_(diff, density_a).mul_(1 - t)  # -(1 - t) K_a(A - B)
    out = (x + y).add_(toward_b).sub_(toward_a).mul_(0.5)
    return out.view(a.shape).to(out_dtype or a.dtype)


def trimmed_task_lerp(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    base: torch.Tensor,
    t: float,
    density_a: float = 1.0,
    density_b: float = 1.0,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``base + (1 - t) K_a(A - base) + t K_b(B - base)`` per group (module doc)."""
    check_inputs([a, b], group_dims, base=base)
    _check(t, density_a, density_b)
    if density_a >= 1 and density_b >= 1:
        return linear([a, b], weights=[1 - t, t], normalize=False, out_dtype=out_dtype)
    dtype = compute_dtype(a)
    z = as_groups(base.to(dtype), group_dims)
    tau_a = _trim_(as_groups(a.to(dtype), group_dims) - z, density_a)
    tau_b = _trim_(as_groups(b.to(dtype), group_dims) - z, density_b)
    out = z.add(tau_a, alpha=1 - t).add_(tau_b, alpha=t)
    return out.view(a.shape).to(out_dtype or a.dtype)


def _check(t: float, density_a: float, density_b: float) -> None:
    if not 0 <= t <= 1:
        raise ConfigError(f"trimmed lerp: t={t!r} must be in [0, 1]")
    for name, d in (("density_a", density_a), ("density_b", density_b)):
        if not 0 < d <= 1:
            raise ConfigError(f"trimmed lerp: {name}={d!r} must be in (0, 1]")


def _densities(
    name: str, tensors: Sequence[torch.Tensor], model_params: Sequence[Mapping[str, float]]
) -> tuple[float, float]:
    if len(tensors) != 2:
        raise ConfigError(f"{name}: takes exactly 2 tensors (t=0 end, t=1 end), got {len(tensors)}")
    dens = [float(p.get("density", 1.0)) for p in model_params] or [1.0, 1.0]
    return dens[0], dens[1]


def _lerp_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    d_a, d_b = _densities("trimmed_lerp", tensors, model_params)
    return trimmed_lerp(
        tensors[0],
        tensors[1],
        t=float(params["t"]),
        density_a=d_a,
        density_b=d_b,
        group_dims=group_dims,
    )


def _task_lerp_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    d_a, d_b = _densities("trimmed_task_lerp", tensors, model_params)
    assert base is not None  # apply_method checks needs_base
    return trimmed_task_lerp(
        tensors[0],
        tensors[1],
        base=base,
        t=float(params["t"]),
        density_a=d_a,
        density_b=d_b,
        group_dims=group_dims,
    )


implement("trimmed_lerp", _lerp_fn)
implement("trimmed_task_lerp", _task_lerp_fn)
