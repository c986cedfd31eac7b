"""The named merge methods, as pure functions and as registered :class:`MergeMethod` s.

Defaults are mergekit 0.1.5's: ``weight`` is required for every method that has it;
``density`` 1.0; breadcrumbs ``gamma`` 0.01; DELLA ``epsilon`` 0.15; ``lambda`` 1.0;
``normalize`` true for linear, ties and della, false otherwise; ``rescale`` true for the
DARE and DELLA variants, false otherwise; slerp ``t`` required.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge.ops.api import (
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
from darwinmerge.merge.ops.interpolation import linear, slerp
from darwinmerge.merge.ops.task_vectors import (
    Sparsifier,
    draw_masks,
    generalized_task_arithmetic,
)

__all__ = [
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

# name -> (sparsifier, consensus, default normalize, default rescale, extra per-model param)
_TASK_METHODS: dict[str, tuple[Sparsifier, bool, bool, bool, dict[str, float]]] = {
    "task_arithmetic": (Sparsifier.none, False, False, False, {}),
    "ties": (Sparsifier.magnitude, True, True, False, {}),
    "dare_ties": (Sparsifier.random, True, False, True, {}),
    "dare_linear": (Sparsifier.random, False, False, True, {}),
    "breadcrumbs": (Sparsifier.outliers, False, False, False, {"gamma": 0.01}),
    "breadcrumbs_ties": (Sparsifier.outliers, True, False, False, {"gamma": 0.01}),
    "della": (Sparsifier.della, True, True, True, {"epsilon": 0.15}),
    "della_linear": (Sparsifier.della, False, False, True, {"epsilon": 0.15}),
}


_EXTRA_SPECS = {"gamma": GAMMA, "epsilon": EPSILON}


def _task_method(name: str, **kwargs: Any) -> torch.Tensor:
    sparsifier, consensus, normalize, rescale, extra = _TASK_METHODS[name]
    kwargs.setdefault("normalize", normalize)
    kwargs.setdefault("rescale", rescale)
    n = len(kwargs["tensors"])
    for param, default in extra.items():
        if kwargs.get(param + "s") is None:
            kwargs[param + "s"] = [default] * n
    return generalized_task_arithmetic(sparsifier=sparsifier, consensus=consensus, **kwargs)


def task_arithmetic(
    tensors: Sequence[torch.Tensor], *, base: torch.Tensor, weights: Sequence[float], **kw: Any
) -> torch.Tensor:
    """``base + lambda * sum_i w_i (x_i - base)`` (divided by ``sum w`` if normalize)."""
    return _task_method("task_arithmetic", tensors=tensors, base=base, weights=weights, **kw)


def ties(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """TIES: top-k magnitude per group, sign election by sum, disjoint (normalised) mean."""
    return _task_method(
        "ties", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def dare_ties(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """DARE masks (Bernoulli(density), L1 rescale) followed by TIES sign consensus."""
    return _task_method(
        "dare_ties", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def dare_linear(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """DARE masks (Bernoulli(density), L1 rescale), weighted sum of task vectors."""
    return _task_method(
        "dare_linear", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def breadcrumbs(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """Model breadcrumbs: drop the smallest and the gamma largest |delta| per group."""
    return _task_method(
        "breadcrumbs", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def breadcrumbs_ties(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """Breadcrumbs sparsification with TIES sign consensus."""
    return _task_method(
        "breadcrumbs_ties", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def della(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """DELLA: magnitude-rank keep probabilities, L1 rescale, TIES sign consensus."""
    return _task_method(
        "della", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


def della_linear(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor,
    weights: Sequence[float],
    densities: Sequence[float],
    **kw: Any,
) -> torch.Tensor:
    """DELLA sparsification, weighted sum of task vectors."""
    return _task_method(
        "della_linear", tensors=tensors, base=base, weights=weights, densities=densities, **kw
    )


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
    sparsifier, _, _, _, extra = _TASK_METHODS[name]
    if not sparsifier.random_masks:
        raise ValueError(f"{name} is not a random method")
    epsilons = _column(model_params, "epsilon")
    if epsilons is None and "epsilon" in extra:
        epsilons = [extra["epsilon"]] * len(tensors)
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


# ---- registration: uniform adapters -------------------------------------------------


def _column(model_params: Sequence[Mapping[str, float]], key: str) -> list[float] | None:
    if not model_params or key not in model_params[0]:
        return None
    return [float(p[key]) for p in model_params]


def _della_joint(p: Mapping[str, float | bool]) -> str | None:
    """DELLA keeps each entry with a probability in ``density +/- epsilon``."""
    d, e = float(p["density"]), float(p["epsilon"])
    if d < 1 and (d - e <= 0 or d + e >= 1):
        return (
            f"density={d:g} and epsilon={e:g} must keep density +/- epsilon inside (0, 1) "
            "(or density 1: no pruning)"
        )
    return None


def _registered_task_method(name: str) -> None:
    sparsifier, _, normalize, rescale, extra = _TASK_METHODS[name]
    params: dict[str, ParamSpec] = {"weight": WEIGHT}
    if sparsifier is not Sparsifier.none:
        params["density"] = DENSITY
    for key, default in extra.items():
        params[key] = _EXTRA_SPECS[key].with_default(default)
    params["normalize"] = NORMALIZE.with_default(normalize)
    params["lambda"] = LAMBDA
    if sparsifier is not Sparsifier.none:
        params["rescale"] = RESCALE.with_default(rescale)

    def fn(
        tensors: Sequence[torch.Tensor],
        *,
        base: torch.Tensor,
        model_params: Sequence[Mapping[str, float]],
        params: Mapping[str, float | bool],
        group_dims: int = 0,
        generator: torch.Generator | None = None,
        masks: Sequence[torch.Tensor | None] | None = None,
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
        )

    METHODS.add(
        name,
        MergeMethod(
            name=name,
            needs_base=True,
            random=sparsifier.random_masks,
            params=params,
            fn=fn,
            min_inputs=1,
            joint_check=_della_joint if sparsifier is Sparsifier.della else None,
        ),
    )


for _name in _TASK_METHODS:
    _registered_task_method(_name)


def _linear_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    weights = _column(model_params, "weight")
    if weights is None:
        raise ConfigError("linear: model parameter 'weight' is required")
    return linear(
        tensors, weights=weights, normalize=bool(params["normalize"]), group_dims=group_dims
    )


def _slerp_fn(
    tensors: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, float]],
    params: Mapping[str, float | bool],
    group_dims: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    return slerp(tensors[0], tensors[1], t=float(params["t"]), group_dims=group_dims)


METHODS.add(
    "linear",
    MergeMethod(
        "linear",
        needs_base=False,
        random=False,
        params={"weight": WEIGHT, "normalize": NORMALIZE.with_default(True)},
        fn=_linear_fn,
        min_inputs=1,
    ),
)
METHODS.add(
    "slerp",
    MergeMethod(
        "slerp",
        needs_base=False,
        random=False,
        params={"t": T},
        fn=_slerp_fn,
        min_inputs=2,
        max_inputs=2,
    ),
)
