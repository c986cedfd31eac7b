"""The uniform entry point the planner uses: ``METHODS`` registry and ``apply_method``.

Every method is a :class:`MergeMethod` whose ``fn`` has one calling convention::

    fn(tensors, *, base, model_params, params, group_dims, generator) -> Tensor

where ``model_params`` is one complete dict per model and ``params`` the complete global
parameters (``apply_method`` fills defaults and validates before calling ``fn``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge.ops.groups import check_inputs
from darwinmerge.registry import Registry

__all__ = ["METHODS", "MergeMethod", "PARAM_RULES", "apply_method"]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method; a default of ``None`` marks a required parameter."""

    name: str
    needs_base: bool
    random: bool
    model_params: dict[str, float | None]
    global_params: dict[str, float | bool | None]
    fn: Callable[..., torch.Tensor]


METHODS: Registry[MergeMethod] = Registry("merge method")


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# name -> (check, what a valid value is)
PARAM_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "weight": (_real, "a finite number"),
    "density": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),  # type: ignore[operator]
    "gamma": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),  # type: ignore[operator]
    "epsilon": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),  # type: ignore[operator]
    "t": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]"),  # type: ignore[operator]
    "lambda": (_real, "a finite number"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    "rescale": (lambda v: isinstance(v, bool), "true or false"),
}


def _resolve(
    method: str,
    where: str,
    given: Mapping[str, float | bool],
    spec: Mapping[str, float | bool | None],
) -> dict[str, float | bool]:
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(
            f"{method}: unknown {where} parameter(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(spec)) or 'none'}"
        )
    resolved: dict[str, float | bool] = {}
    for name, default in spec.items():
        value = given.get(name, default)
        if value is None:
            raise ConfigError(f"{method}: {where} parameter {name!r} is required")
        check, valid = PARAM_RULES[name]
        if not check(value):
            raise ConfigError(f"{method}: {where} parameter {name!r}={value!r} must be {valid}")
        resolved[name] = value
    return resolved


def apply_method(
    name: str,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    model_params: Sequence[Mapping[str, float]] = (),
    params: Mapping[str, float | bool] = {},  # noqa: B006 - read only
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Validate parameters and inputs, then merge ``tensors`` with method ``name``.

    ``model_params`` has one mapping per tensor (or is empty: every model takes the
    defaults). Raises UnknownNameError, ConfigError (parameters) or MergeError (inputs).
    """
    method = METHODS.get(name)
    tensors = list(tensors)
    if not tensors:
        raise MergeError(f"{name}: no input tensors")
    if method.needs_base and base is None:
        raise ConfigError(f"{name}: needs a base tensor (task vectors are taken against it)")
    if not method.needs_base and base is not None:
        raise ConfigError(f"{name}: takes no base tensor; pass the parents as tensors")
    if name == "slerp" and len(tensors) != 2:
        raise ConfigError(f"slerp: takes exactly 2 tensors (t=0 end, t=1 end), got {len(tensors)}")
    per_model = list(model_params) or [{} for _ in tensors]
    if len(per_model) != len(tensors):
        raise ConfigError(f"{name}: {len(per_model)} model_params for {len(tensors)} tensors")
    resolved_models = [
        _resolve(name, f"model {i}", given, method.model_params)
        for i, given in enumerate(per_model)
    ]
    resolved_global = _resolve(name, "global", params, method.global_params)
    if method.random and generator is None:
        raise ConfigError(
            f"{name}: is random and needs a torch.Generator seeded from (seed, tensor)"
        )
    check_inputs(tensors, group_dims, base=base)
    return method.fn(
        tensors,
        base=base,
        model_params=resolved_models,
        params=resolved_global,
        group_dims=group_dims,
        generator=generator,
    )
