"""The named merge methods as pure functions, attached to their declarations.

The declarations (parameters, defaults, ranges) are in :mod:`darwinmerge.merge.methods`;
defaults are mergekit 0.1.5's: ``weight`` is required for every method that has it;
``density`` 1.0; breadcrumbs ``gamma`` 0.01; DELLA ``epsilon`` 0.15; ``lambda`` 1.0;
``normalize`` true for linear, ties and della, false otherwise; ``rescale`` true for the
DARE and DELLA variants, false otherwise; slerp ``t`` required. The plain functions
below take the same defaults from the declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge.methods import METHODS, implement
from darwinmerge.merge.ops.interpolation import linear, slerp
from darwinmerge.merge.ops.task_vectors import (
    Sparsifier,
    draw_masks,
    generalized_task_arithmetic,
)

__all__ = [
    "TASK_METHODS",
    "draw_method_masks",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
]

#: name -> (sparsifier, sign consensus) of every declared task method (read from the
#: declarations' ``task_vector``, :mod:`darwinmerge.merge.methods`); the public
#: functions, the registry entries and the ``streamed_task_arithmetic`` kernel are made
#: from it
TASK_METHODS: dict[str, tuple[Sparsifier, bool]] = {
    name: (Sparsifier(declared.task_vector[0]), declared.task_vector[1])
    for name in METHODS
    if (declared := METHODS.get(name)).task_vector is not None
}

#: the sparsifiers' own per-model parameters (besides weight and density)
_EXTRA = ("gamma", "epsilon")


def _defaults(name: str) -> dict[str, float | bool | None]:
    return {k: p.default for k, p in METHODS.get(name).params.items()}


def _task_method(name: str, **kwargs: Any) -> torch.Tensor:
    sparsifier, consensus = TASK_METHODS[name]
    defaults = _defaults(name)
    kwargs.setdefault("normalize", defaults["normalize"])
    kwargs.setdefault("rescale", defaults.get("rescale", False))
    n = len(kwargs["tensors"])
    for param in _EXTRA:
        if param in defaults and kwargs.get(param + "s") is None:
            kwargs[param + "s"] = [defaults[param]] * n
    return generalized_task_arithmetic(sparsifier=sparsifier, consensus=consensus, **kwargs)


def _plain(name: str, doc: str) -> Callable[..., torch.Tensor]:
    """The plain function of task method ``name``: ``fn(tensors, *, base, weights,
    densities=..., **generalized_task_arithmetic's keywords)`` with the declared defaults."""

    def fn(
        tensors: Sequence[torch.Tensor], *, base: torch.Tensor, weights: Sequence[float], **kw: Any
    ) -> torch.Tensor:
        return _task_method(name, tensors=tensors, base=base, weights=weights, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


task_arithmetic = _plain(
    "task_arithmetic", "``base + lambda * sum_i w_i (x_i - base)`` (/ ``sum w`` if normalize)."
)
ties = _plain("ties", "TIES: top-k magnitude per group, sign election, disjoint (normalised) mean.")
dare_ties = _plain("dare_ties", "DARE masks (Bernoulli(density), L1 rescale), TIES sign consensus.")
dare_linear = _plain("dare_linear", "DARE masks (Bernoulli(density), L1 rescale), weighted sum.")
breadcrumbs = _plain("breadcrumbs", "Breadcrumbs: drop the smallest and gamma largest |delta|.")
breadcrumbs_ties = _plain("breadcrumbs_ties", "Breadcrumbs sparsification, TIES sign consensus.")
della = _plain("della", "DELLA: magnitude-rank keep probabilities, rescale, TIES consensus.")
della_linear = _plain("della_linear", "DELLA sparsification, weighted sum of task vectors.")


def draw_method_masks(
    name: str,
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    model_params: Sequence[Mapping[str, float]],
    group_dims: int = 0,
    generator: torch.Generator,
) -> list[torch.Tensor | None]:
    """The masks random method ``name`` draws from ``generator`` (same state, same masks).

    Pass them back as ``masks=`` to the method's ``fn`` (or to a per-group slice of the
    inputs, sliced the same way) to replay the merge without the generator.
    """
    sparsifier, _ = TASK_METHODS[name]
    if not sparsifier.random_masks:
        raise ValueError(f"{name} is not a random method")
    epsilons = _column(model_params, "epsilon")
    default_epsilon = _defaults(name).get("epsilon")
    if epsilons is None and isinstance(default_epsilon, float):
        epsilons = [default_epsilon] * len(tensors)
    densities = _column(model_params, "density") or [1.0] * len(tensors)
    return draw_masks(
        sparsifier,
        tensors,
        base=base,
        densities=densities,
        epsilons=epsilons,
        group_dims=group_dims,
        generator=generator,
    )


# ---- implementations of the declared methods: uniform adapters ----------------------


def _column(model_params: Sequence[Mapping[str, float]], key: str) -> list[float] | None:
    if not model_params or key not in model_params[0]:
        return None
    return [float(p[key]) for p in model_params]


def _implemented_task_method(name: str) -> None:
    def fn(
        tensors: Sequence[torch.Tensor],
        *,
        base: torch.Tensor,
        model_params: Sequence[Mapping[str, float]],
        params: Mapping[str, float | bool],
        group_dims: int = 0,
        generator: torch.Generator | None = None,
        masks: Sequence[torch.Tensor | None] | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _task_method(
            name,
            tensors=tensors,
            base=base,
            weights=_column(model_params, "weight"),
            densities=_column(model_params, "density"),
            gammas=_column(model_params, "gamma"),
            epsilons=_column(model_params, "epsilon"),
            normalize=bool(params["normalize"]),
            rescale=bool(params.get("rescale", False)),
            lambda_=float(params["lambda"]),
            group_dims=group_dims,
            generator=generator,
            masks=masks,
            out=out,
        )

    implement(name, fn)


for _name in TASK_METHODS:
    _implemented_task_method(_name)


def _linear_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    weights = _column(model_params, "weight")
    if weights is None:
        raise ConfigError("linear: model parameter 'weight' is required")
    return linear(
        tensors,
        weights=weights,
        normalize=bool(params["normalize"]),
        group_dims=group_dims,
        out=out,
    )


def _slerp_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    return slerp(tensors[0], tensors[1], t=float(params["t"]), group_dims=group_dims, out=out)


implement("linear", _linear_fn)
implement("slerp", _slerp_fn)
