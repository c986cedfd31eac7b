"""The uniform entry point the planner uses: ``METHODS`` registry and ``apply_method``.

The declarations (``MergeMethod``, ``ParamSpec``, ``METHODS``) live in the torch-free
:mod:`darwinmerge.merge.methods` and are re-exported here; the ops modules attach the
functions.

Every method is a :class:`MergeMethod` whose ``fn`` has one calling convention::

    fn(tensors, *, base, model_params, params, group_dims, generator) -> Tensor

where ``model_params`` is one complete dict per model and ``params`` the complete global
parameters (``apply_method`` fills defaults and validates before calling ``fn``).

:func:`prepare_call` is that validation alone: it returns a :class:`MethodCall` (the
method, the inputs and the complete parameters) that :meth:`MethodCall.run` evaluates
with the reference function, or that a kernel (:mod:`darwinmerge.merge.kernels`) takes
instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge.methods import (
    DENSITY,
    EPSILON,
    GAMMA,
    LAMBDA,
    METHODS,
    NORMALIZE,
    RESCALE,
    WEIGHT,
    MergeMethod,
    ParamSpec,
    T,
)
from darwinmerge.merge.ops.groups import check_inputs

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
    "MethodCall",
    "ParamSpec",
    "apply_method",
    "prepare_call",
]


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


@dataclass(frozen=True)
class MethodCall:
    """One validated merge call: the method, its inputs and its complete parameters
    (defaults filled, ranges checked). ``run`` evaluates the reference function."""

    method: MergeMethod
    tensors: list[torch.Tensor]
    base: torch.Tensor | None
    model_params: list[dict[str, float | bool]]
    params: dict[str, float | bool]
    group_dims: int
    generator: torch.Generator | None

    def column(self, key: str) -> list[float] | None:
        """Per-model parameter ``key`` as one list (None where the method has none)."""
        if not self.model_params or key not in self.model_params[0]:
            return None
        return [float(p[key]) for p in self.model_params]

    def check_out(self, out: torch.Tensor) -> bool:
        """Whether ``out`` can receive the result directly: the inputs' shape (else
        :class:`MergeError`), dtype and device, contiguous."""
        shape = tuple(self.tensors[0].shape)
        if tuple(out.shape) != shape:
            raise MergeError(
                f"{self.method.name}: out has shape {tuple(out.shape)}, the inputs {shape}"
            )
        first = self.tensors[0]
        return out.dtype == first.dtype and out.device == first.device and out.is_contiguous()

    def run(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The reference result (see :func:`apply_method` for ``out``)."""
        extra: dict[str, torch.Tensor] = {}
        if out is not None and self.check_out(out) and _takes_out(self.method.function):
            extra["out"] = out
        result = self.method.function(
            self.tensors,
            base=self.base,
            model_params=self.model_params,
            params=self.params,
            group_dims=self.group_dims,
            generator=self.generator,
            **extra,
        )
        return deliver(result, out)


def deliver(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``result``, or ``out`` holding it (copied in unless it was written in place)."""
    if out is None:
        return result
    if result.data_ptr() != out.data_ptr():  # not written in place
        out.copy_(result)
    return out


def prepare_call(
    name: str,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    model_params: Sequence[Mapping[str, float]] = (),
    params: Mapping[str, float | bool] = {},  # noqa: B006 - read only
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> MethodCall:
    """Validate parameters and inputs of a call to method ``name`` (see
    :func:`apply_method`); raises UnknownNameError, ConfigError or MergeError."""
    method = METHODS.get(name)
    tensors = list(tensors)
    if not tensors:
        raise MergeError(f"{name}: no input tensors")
    if method.needs_base and base is None:
        raise ConfigError(f"{name}: needs a base tensor (task vectors are taken against it)")
    if not method.takes_base and base is not None:
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
    return MethodCall(
        method, tensors, base, resolved_models, resolved_global, group_dims, generator
    )


def apply_method(
    name: str,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    model_params: Sequence[Mapping[str, float]] = (),
    params: Mapping[str, float | bool] = {},  # noqa: B006 - read only
    group_dims: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validate parameters and inputs, then merge ``tensors`` with method ``name``
    (the reference function; the executor may run a kernel instead, see
    :mod:`darwinmerge.merge.kernels`).

    ``model_params`` has one mapping per tensor (or is empty: every model takes the
    defaults). Raises UnknownNameError, ConfigError (parameters) or MergeError (inputs).

    ``out`` (the inputs' shape) receives the result and is returned: a method whose
    function takes ``out`` writes into it directly when it has the inputs' dtype and
    device and is contiguous (no full-size allocation: the resident child's inner step);
    otherwise the result is copied in (cast to ``out``'s dtype). The values are the
    same as without ``out`` followed by ``.to(out.dtype)``. ``out`` must not share
    memory with an input.
    """
    call = prepare_call(
        name,
        tensors,
        base=base,
        model_params=model_params,
        params=params,
        group_dims=group_dims,
        generator=generator,
    )
    return call.run(out)


@functools.cache
def _takes_out(fn: Callable[..., torch.Tensor]) -> bool:
    """Whether a method function accepts ``out=`` (plug-in methods need not)."""
    return "out" in inspect.signature(fn).parameters
