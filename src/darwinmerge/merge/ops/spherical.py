"""Interpolation on the sphere: nuslerp, multislerp and the Karcher mean, per group.

Definitions follow mergekit 0.1.5 (``merge_methods/nuslerp.py``, ``multislerp.py``,
``karcher.py``); every norm, angle and mean direction is taken per group (per expert and
projection on fused expert tensors), which at ``group_dims=0`` is mergekit's per-tensor
behaviour. Computation in float32 (float64 for float64 inputs), result in the first
input's dtype.

* ``nuslerp(a, b; t)``: slerp of the raw vectors, ``(sin((1-t) theta) a + sin(t theta) b)
  / sin(theta)`` with ``cos theta`` from the unit vectors, lerp where ``1 - cos^2 <=
  1e-16``. ``t = w_b / (w_a + w_b)`` (0.5 when the weights sum to ~0). The vectors are
  each group flattened (``nuslerp_flatten``, default), else its rows (last axis), or its
  columns (``nuslerp_row_wise``). With a base: ``base + nuslerp(a - base, b - base)``.
* ``multislerp(x_1..x_n; w)``: unit vectors ``u_i = x_i / (|x_i| + eps)``, their weighted
  mean direction ``m`` (normalised), tangent vectors ``u_i - <u_i, m> m``, their weighted
  sum ``v``, mapped back ``m cos|v| + v sin|v| / |v|`` (``|v| + eps``) and scaled by
  ``sum_i w_i |x_i|``; weights normalised to sum 1 by default. Two inputs whose mean
  direction vanishes are lerped; more are refused. With a base, on ``x_i - base``.
* ``karcher(x_1..x_n)``: the Karcher (Frechet) mean of the unit vectors on the sphere,
  equal weights, by at most ``max_iter`` Riemannian gradient steps (stop when the tangent
  norm is below ``tol``), scaled by the mean norm. Inputs with norm ``<= tol`` take no
  part in the direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge.methods import implement_plain
from darwinmerge.merge.ops.groups import by_group, check_inputs, compute_dtype

__all__ = ["karcher", "multislerp", "nuslerp", "nuslerp_t"]


def nuslerp_t(weight_a: float, weight_b: float) -> float:
    """mergekit's ``t`` from the two weights: ``w_b / (w_a + w_b)``, 0.5 if they sum to ~0."""
    total = weight_a + weight_b
    return 0.5 if abs(total) < 1e-6 else weight_b / total


def _vectors(x: torch.Tensor, row_wise: bool, flatten: bool) -> torch.Tensor:
    """``[G, *S]`` -> ``[..., n]``: the vectors that slerp one at a time."""
    if flatten or x.dim() < 3:  # a group that is one vector
        return x.reshape(x.shape[0], -1)
    return x.transpose(1, -1) if row_wise else x


def _from_vectors(v: torch.Tensor, grouped: torch.Tensor, row_wise: bool, flatten: bool):
    if flatten or grouped.dim() < 3:
        return v.reshape(grouped.shape)
    return v.transpose(1, -1) if row_wise else v


def nuslerp(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    t: float,
    base: torch.Tensor | None = None,
    row_wise: bool = False,
    flatten: bool = True,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Slerp from ``a`` (t=0) to ``b`` (t=1) of each group's vectors (module doc)."""
    check_inputs([a, b], group_dims, base=base)
    dtype = compute_dtype(a)
    x, y = by_group(a.to(dtype), group_dims), by_group(b.to(dtype), group_dims)
    origin = by_group(base.to(dtype), group_dims) if base is not None else None
    if origin is not None:
        x, y = x - origin, y - origin
    v0, v1 = _vectors(x, row_wise, flatten), _vectors(y, row_wise, flatten)
    u0 = v0 / torch.linalg.vector_norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-16
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    spherical = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    merged = torch.where(colinear, (1 - t) * v0 + t * v1, spherical)
    result = _from_vectors(merged, x, row_wise, flatten)
    if origin is not None:
        result = origin + result
    return result.reshape(a.shape).to(out_dtype or a.dtype)


def multislerp(
    tensors: Sequence[torch.Tensor],
    *,
    weights: Sequence[float],
    base: torch.Tensor | None = None,
    normalize_weights: bool = True,
    eps: float = 1e-8,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Barycentric interpolation on the sphere of each group (module doc)."""
    check_inputs(tensors, group_dims, base=base)
    if len(weights) != len(tensors):
        raise ConfigError(f"multislerp: {len(weights)} weights for {len(tensors)} tensors")
    first = tensors[0]
    if len(tensors) == 1:
        return first.to(out_dtype or first.dtype, copy=True)
    dtype = compute_dtype(first)
    groups = by_group(first, group_dims).shape[0]
    x = torch.stack([t.to(dtype).reshape(groups, -1) for t in tensors])  # [N, G, n]
    origin = base.to(dtype).reshape(groups, -1) if base is not None else None
    if origin is not None:
        x = x - origin
    w = torch.tensor([float(v) for v in weights], dtype=dtype, device=first.device)
    if normalize_weights:
        w = w / w.sum()
    w_ = w.view(-1, 1, 1)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # [N, G, 1]
    units = x / (norms + eps)
    mean = (units * w_).sum(0)
    mean_norm = torch.linalg.vector_norm(mean, dim=-1, keepdim=True)  # [G, 1]
    flat = mean_norm < eps  # antipodal inputs with balancing weights
    if bool(flat.any()) and len(tensors) != 2:
        raise MergeError(
            "multislerp: the weighted mean direction of the inputs is zero (antipodal "
            "inputs with balancing weights); change the weights"
        )
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * w_).sum(0)
    length = torch.linalg.vector_norm(tangent, dim=-1, keepdim=True) + eps
    on_sphere = mean * torch.cos(length) + tangent * (torch.sin(length) / length)
    result = on_sphere * (norms * w_).sum(0)
    if len(tensors) == 2:
        result = torch.where(flat, x[0] * w[0] + x[1] * w[1], result)
    if origin is not None:
        result = result + origin
    return result.reshape(first.shape).to(out_dtype or first.dtype)


def _karcher_direction(
    vectors: Sequence[torch.Tensor], max_iter: int, tol: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The Karcher mean direction of one group's vectors (equal weights) and their norms."""
    norms = [torch.linalg.vector_norm(v) for v in vectors]
    pairs = list(zip(vectors, norms, strict=True))
    units = [v / n if float(n) != 0.0 else torch.zeros_like(v) for v, n in pairs]
    valid = [u for u, (_, n) in zip(units, pairs, strict=True) if float(n) > tol]
    if not valid:
        return torch.zeros_like(vectors[0]), norms
    alpha = 1.0 / len(valid)
    mean = sum(alpha * u for u in valid)
    assert isinstance(mean, torch.Tensor)
    mean_norm = torch.linalg.vector_norm(mean)
    mean = valid[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for u in valid:
            dot = torch.clamp(torch.dot(mean, u), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (u - dot * mean)
        step = torch.linalg.vector_norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    return mean, norms


def karcher(
    tensors: Sequence[torch.Tensor],
    *,
    max_iter: int = 10,
    tol: float = 1e-5,
    group_dims: int = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Karcher mean of each group's unit vectors, scaled by the mean norm (module doc)."""
    check_inputs(tensors, group_dims)
    first = tensors[0]
    if len(tensors) == 1:
        return first.to(out_dtype or first.dtype, copy=True)
    dtype = compute_dtype(first)
    groups = by_group(first, group_dims).shape[0]
    x = [t.to(dtype).reshape(groups, -1) for t in tensors]
    result = torch.empty_like(x[0])
    alpha = 1.0 / len(tensors)
    for g in range(groups):  # the iteration stops at its own step in each group
        direction, norms = _karcher_direction([v[g] for v in x], int(max_iter), tol)
        result[g] = sum(alpha * n for n in norms) * direction
    return result.reshape(first.shape).to(out_dtype or first.dtype)


# ---- attached to the declarations (merge/methods.py) ----------------------------------


def _weights(model_params: Sequence[Mapping[str, float]]) -> list[float]:
    return [float(p["weight"]) for p in model_params]


implement_plain(
    "nuslerp",
    lambda xs, base, mp, p, g: nuslerp(
        xs[0],
        xs[1],
        t=nuslerp_t(*_weights(mp)),
        base=base,
        row_wise=bool(p["nuslerp_row_wise"]),
        flatten=bool(p["nuslerp_flatten"]),
        group_dims=g,
    ),
)
implement_plain(
    "multislerp",
    lambda xs, base, mp, p, g: multislerp(
        xs,
        weights=_weights(mp),
        base=base,
        normalize_weights=bool(p["normalize_weights"]),
        eps=float(p["eps"]),
        group_dims=g,
    ),
)
implement_plain(
    "karcher",
    lambda xs, base, mp, p, g: karcher(
        xs, max_iter=int(p["max_iter"]), tol=float(p["tol"]), group_dims=g
    ),
)
