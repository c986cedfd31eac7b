"""The uniform entry point the planner uses: ``METHODS`` registry and ``apply_method``.

Every method is a :class:`MergeMethod` whose ``fn`` has one calling convention::

    fn(tensors, *, base, model_params, params, group_dims, generator) -> Tensor

where ``model_params`` is one complete dict per model and ``params`` the complete global
parameters (``apply_method`` fills defaults and validates before calling ``fn``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge.ops.groups import check_inputs
from darwinmerge.registry import Registry

__all__ = [
    "DENSITY",
    "EPSILON",
    "GAMMA",
    "LAMBDA",
    "METHODS",
    "NORMALIZE",
    "RESCALE",
    "T",
    "WEIGHT",
    "MergeMethod",
    "ParamSpec",
    "apply_method",
]


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ParamSpec:
    """One declared method parameter: default (``None``: required), valid range, scope.

    ``low`` / ``high`` bound a float parameter (``None``: unbounded), ``low_open`` /
    ``high_open`` exclude the bound itself; ``per_model`` parameters take one value per
    parent (``weight``), the others one for the merge (``t``); ``kind`` is ``"float"`` or
    ``"bool"``.
    """

    default: float | bool | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    per_model: bool = False
    kind: Literal["float", "bool"] = "float"

    def check(self, value: object) -> bool:
        """Whether ``value`` is valid for this parameter."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if not _real(value):
            return False
        v = float(value)  # type: ignore[arg-type]
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (
            self.high is not None and (v > self.high or (self.high_open and v == self.high))
        )

    def describe(self) -> str:
        """What a valid value is, e.g. ``a number in (0, 1]``."""
        if self.kind == "bool":
            return "true or false"
        if self.low is None and self.high is None:
            return "a finite number"
        lo = "(" if self.low_open or self.low is None else "["
        hi = ")" if self.high_open or self.high is None else "]"
        a = "-inf" if self.low is None else f"{self.low:g}"
        b = "inf" if self.high is None else f"{self.high:g}"
        return f"a number in {lo}{a}, {b}{hi}"

    def with_default(self, default: float | bool | None) -> ParamSpec:
        return replace(self, default=default)


#: The parameters the methods share, with their meaning-defining ranges; methods declare
#: theirs from these (``WEIGHT.with_default(...)``), so a name means one thing everywhere.
WEIGHT = ParamSpec(per_model=True)
DENSITY = ParamSpec(1.0, low=0.0, high=1.0, low_open=True, per_model=True)
GAMMA = ParamSpec(0.01, low=0.0, high=1.0, high_open=True, per_model=True)
EPSILON = ParamSpec(0.15, low=0.0, high=1.0, high_open=True, per_model=True)
T = ParamSpec(None, low=0.0, high=1.0)
LAMBDA = ParamSpec(1.0)
NORMALIZE = ParamSpec(True, kind="bool")
RESCALE = ParamSpec(False, kind="bool")


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method and its declared parameters and input count."""

    name: str
    needs_base: bool
    random: bool
    params: dict[str, ParamSpec]
    fn: Callable[..., torch.Tensor]
    min_inputs: int = 1
    max_inputs: int | None = None
    #: a rule joining several per-model parameters (DELLA: density +/- epsilon inside
    #: (0, 1)): given one model's complete parameters, what is wrong, or None
    joint_check: Callable[[Mapping[str, float | bool]], str | None] | None = None

    @property
    def model_params(self) -> dict[str, float | bool | None]:
        """Per-model parameters -> default (``None``: required)."""
        return {k: p.default for k, p in self.params.items() if p.per_model}

    @property
    def global_params(self) -> dict[str, float | bool | None]:
        """Global parameters -> default (``None``: required)."""
        return {k: p.default for k, p in self.params.items() if not p.per_model}

    def inputs_text(self) -> str:
        """How many input models the method takes, in words."""
        if self.max_inputs == self.min_inputs:
            return f"exactly {self.min_inputs}"
        if self.max_inputs is None:
            return f"at least {self.min_inputs}"
        return f"{self.min_inputs} to {self.max_inputs}"


METHODS: Registry[MergeMethod] = Registry("merge method")


def _resolve(
    method: str,
    where: str,
    given: Mapping[str, float | bool],
    spec: Mapping[str, ParamSpec],
) -> dict[str, float | bool]:
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(
            f"{method}: unknown {where} parameter(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(spec)) or 'none'}"
        )
    resolved: dict[str, float | bool] = {}
    for name, declared in spec.items():
        value = given.get(name, declared.default)
        if value is None:
            raise ConfigError(f"{method}: {where} parameter {name!r} is required")
        if not declared.check(value):
            raise ConfigError(
                f"{method}: {where} parameter {name!r}={value!r} must be {declared.describe()}"
            )
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
    if len(tensors) < method.min_inputs or (
        method.max_inputs is not None and len(tensors) > method.max_inputs
    ):
        raise ConfigError(f"{name}: takes {method.inputs_text()} input tensors, got {len(tensors)}")
    per_model = list(model_params) or [{} for _ in tensors]
    if len(per_model) != len(tensors):
        raise ConfigError(f"{name}: {len(per_model)} model_params for {len(tensors)} tensors")
    per_model_specs = {k: p for k, p in method.params.items() if p.per_model}
    global_specs = {k: p for k, p in method.params.items() if not p.per_model}
    resolved_models = [
        _resolve(name, f"model {i}", given, per_model_specs) for i, given in enumerate(per_model)
    ]
    resolved_global = _resolve(name, "global", params, global_specs)
    if method.joint_check is not None:
        for i, resolved in enumerate(resolved_models):
            problem = method.joint_check(resolved)
            if problem:
                raise ConfigError(f"{name}: model {i}: {problem}")
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
