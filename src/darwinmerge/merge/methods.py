"""The merge methods' declarations, without torch: the one ``METHODS`` registry.

A :class:`MergeMethod` declares a method's name, whether it takes a base, whether it is
random, its parameters (:class:`ParamSpec`: default, range, per model or global), how many
inputs it merges and a joint check of its per-model parameters. The built-in methods are
declared here, once; their torch functions live in :mod:`darwinmerge.merge.ops`, which
registers each in ``IMPLEMENTATIONS`` (:func:`implement`) when it is imported; a
declaration finds its function there (:attr:`MergeMethod.function`), so no declaration is
ever changed after it is registered. Recipe
parsing and ``darwin validate`` read only these declarations, so they never import torch.

A plug-in method declares and implements itself in one step:
``METHODS.add(name, MergeMethod(name, ..., fn=my_fn))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from darwinmerge.errors import MergeError
from darwinmerge.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "DENSITY",
    "EPSILON",
    "GAMMA",
    "LAMBDA",
    "IMPLEMENTATIONS",
    "METHODS",
    "NORMALIZE",
    "RESCALE",
    "T",
    "WEIGHT",
    "MergeMethod",
    "MethodFn",
    "ParamSpec",
    "PlainCall",
    "implement",
    "implement_plain",
]

#: ``fn(tensors, *, base, model_params, params, group_dims, generator) -> Tensor``
MethodFn: TypeAlias = "Callable[..., torch.Tensor]"


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
    kind: Literal["float", "bool", "int"] = "float"

    def check(self, value: object) -> bool:
        """Whether ``value`` is valid for this parameter."""
        if self.kind == "bool":
            return isinstance(value, bool)
        if not _real(value):
            return False
        if self.kind == "int" and not float(value).is_integer():  # type: ignore[arg-type]
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
            return "a finite whole number" if self.kind == "int" else "a finite number"
        lo = "(" if self.low_open or self.low is None else "["
        hi = ")" if self.high_open or self.high is None else "]"
        a = "-inf" if self.low is None else f"{self.low:g}"
        b = "inf" if self.high is None else f"{self.high:g}"
        what = "a whole number" if self.kind == "int" else "a number"
        return f"{what} in {lo}{a}, {b}{hi}"

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


def _not_loaded(*args: Any, **kwargs: Any) -> Any:
    raise MergeError(
        "this merge method is declared but its implementation is not loaded; "
        "import darwinmerge.merge.ops (or call darwinmerge.merge.ops.apply_method)"
    )


@dataclass(frozen=True)
class MergeMethod:
    """A merge method: its declaration and, once attached, its torch function ``fn``."""

    name: str
    needs_base: bool
    random: bool
    params: dict[str, ParamSpec]
    fn: MethodFn = _not_loaded
    min_inputs: int = 1
    max_inputs: int | None = None
    #: the base is used when given, not required (nuslerp, multislerp: with a base they
    #: interpolate the task vectors ``x_i - base`` and add the base back)
    optional_base: bool = False
    #: a rule joining several per-model parameters (DELLA: density +/- epsilon inside
    #: (0, 1)): given one model's complete parameters, what is wrong, or None
    joint_check: Callable[[Mapping[str, float | bool]], str | None] | None = None
    #: a task-vector method's (sparsifier, sign consensus): the sparsifier's name as in
    #: ``ops.task_vectors.Sparsifier`` (``none``, ``magnitude``, ``random``,
    #: ``magnitude_outliers``, ``della_magprune``); None for every other method
    task_vector: tuple[str, bool] | None = None

    @property
    def function(self) -> MethodFn:
        """The torch function: a plug-in's own ``fn``, else the built-in one registered
        in ``IMPLEMENTATIONS`` (raises on a call when neither is loaded)."""
        if self.fn is not _not_loaded:
            return self.fn
        if self.name in IMPLEMENTATIONS.names():
            return IMPLEMENTATIONS.get(self.name)
        return _not_loaded

    @property
    def takes_base(self) -> bool:
        """Whether a given base is passed to ``fn`` (required or optional)."""
        return self.needs_base or self.optional_base

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
#: declared method name -> its torch function (the built-ins, registered by ``merge.ops``)
IMPLEMENTATIONS: Registry[MethodFn] = Registry("merge method implementation")


def implement(name: str, fn: MethodFn) -> None:
    """Register the torch function ``fn`` of the declared method ``name`` (once)."""
    method = METHODS.get(name)  # a name never declared is refused, with a did-you-mean
    if method.fn is not _not_loaded or name in IMPLEMENTATIONS.names():
        raise ValueError(f"merge method {name!r} already has an implementation")
    IMPLEMENTATIONS.add(name, fn)


#: ``call(tensors, base, model_params, params, group_dims) -> Tensor``
PlainCall: TypeAlias = "Callable[..., torch.Tensor]"


def implement_plain(name: str, call: PlainCall) -> None:
    """Attach a deterministic method given as ``call(tensors, base, model_params, params,
    group_dims)`` (the complete per-model and global parameters): the uniform ``fn``
    signature is written once, here, for every such method."""

    def fn(
        tensors: Sequence[torch.Tensor],
        *,
        base: torch.Tensor | None,
        model_params: Sequence[Mapping[str, float]],
        params: Mapping[str, float | bool],
        group_dims: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return call(tensors, base, model_params, params, group_dims)

    implement(name, fn)


# ---- the built-in declarations (defaults are mergekit 0.1.5's) ----------------------


def _della_joint(p: Mapping[str, float | bool]) -> str | None:
    """DELLA keeps each entry with a probability in ``density +/- epsilon``."""
    d, e = float(p["density"]), float(p["epsilon"])
    if d < 1 and (d - e <= 0 or d + e >= 1):
        return (
            f"density={d:g} and epsilon={e:g} must keep density +/- epsilon inside (0, 1) "
            "(or density 1: no pruning)"
        )
    return None


#: each sparsifier's own per-model parameters (besides weight and density)
_SPARSIFIER_PARAMS: dict[str, dict[str, ParamSpec]] = {
    "magnitude_outliers": {"gamma": GAMMA},
    "della_magprune": {"epsilon": EPSILON},
}


def _task_method(
    name: str,
    sparsifier: str,
    consensus: bool,
    *,
    normalize: bool = False,
    rescale: bool = False,
) -> MergeMethod:
    """A task-vector method (``base + lambda * sum_i w_i (x_i - base)``, after an optional
    per-model sparsification of the deltas, with TIES sign consensus or not): ``weight``,
    ``density`` when sparsified, the sparsifier's own per-model parameters,
    ``normalize``, ``lambda``, ``rescale``. The one declaration of the method: the ops
    (:mod:`darwinmerge.merge.ops.catalog`) and the kernels read ``task_vector``."""
    sparsified = sparsifier != "none"
    params: dict[str, ParamSpec] = {"weight": WEIGHT}
    if sparsified:
        params["density"] = DENSITY
    params.update(_SPARSIFIER_PARAMS.get(sparsifier, {}))
    params["normalize"] = NORMALIZE.with_default(normalize)
    params["lambda"] = LAMBDA
    if sparsified:
        params["rescale"] = RESCALE.with_default(rescale)
    return MergeMethod(
        name,
        needs_base=True,
        random=sparsifier in ("random", "della_magprune"),
        params=params,
        joint_check=_della_joint if sparsifier == "della_magprune" else None,
        task_vector=(sparsifier, consensus),
    )


for _method in (
    # name, sparsifier, sign consensus (TIES), non-default normalize / rescale
    _task_method("task_arithmetic", "none", False),
    _task_method("ties", "magnitude", True, normalize=True),
    _task_method("dare_ties", "random", True, rescale=True),
    _task_method("dare_linear", "random", False, rescale=True),
    _task_method("breadcrumbs", "magnitude_outliers", False),
    _task_method("breadcrumbs_ties", "magnitude_outliers", True),
    _task_method("della", "della_magprune", True, normalize=True, rescale=True),
    _task_method("della_linear", "della_magprune", False, rescale=True),
    MergeMethod(
        "linear",
        needs_base=False,
        random=False,
        params={"weight": WEIGHT, "normalize": NORMALIZE.with_default(True)},
    ),
    MergeMethod(
        "slerp", needs_base=False, random=False, params={"t": T}, min_inputs=2, max_inputs=2
    ),
    # lerp from A (t=0) to B (t=1) along each group's largest differences (ops/trimmed.py)
    MergeMethod(
        "trimmed_lerp",
        needs_base=False,
        random=False,
        params={"density": DENSITY, "t": T},
        min_inputs=2,
        max_inputs=2,
    ),
    MergeMethod(
        "trimmed_task_lerp",
        needs_base=True,
        random=False,
        params={"density": DENSITY, "t": T},
        min_inputs=2,
        max_inputs=2,
    ),
):
    METHODS.add(_method.name, _method)

# ---- the methods ported from mergekit 0.1.5 (maths in ops/spherical.py, ops/consensus.py,
# ops/selective.py); parameter names are mergekit's, so its YAML reads as is ----------

_FLAG_OFF = ParamSpec(False, kind="bool")
_FLAG_ON = ParamSpec(True, kind="bool")
_NONNEGATIVE = ParamSpec(0.0, low=0.0)

for _method in (
    # spherical interpolation of two models (of their task vectors with a base)
    MergeMethod(
        "nuslerp",
        needs_base=False,
        optional_base=True,
        random=False,
        params={"weight": WEIGHT, "nuslerp_row_wise": _FLAG_OFF, "nuslerp_flatten": _FLAG_ON},
        min_inputs=2,
        max_inputs=2,
    ),
    MergeMethod(
        "multislerp",
        needs_base=False,
        optional_base=True,
        random=False,
        params={
            "weight": WEIGHT,
            "normalize_weights": _FLAG_ON,
            "eps": ParamSpec(1e-8, low=0.0, low_open=True),
        },
    ),
    MergeMethod(
        "karcher",
        needs_base=False,
        random=False,
        params={
            "max_iter": ParamSpec(10, low=0.0, kind="int"),
            "tol": _NONNEGATIVE.with_default(1e-5),
        },
    ),
    MergeMethod(
        "model_stock",
        needs_base=True,
        random=False,
        params={"filter_wise": _FLAG_OFF},
        min_inputs=2,
    ),
    MergeMethod(
        "sce",
        needs_base=True,
        random=False,
        params={"select_topk": ParamSpec(1.0, low=0.0, high=1.0, low_open=True)},
    ),
    MergeMethod(
        "nearswap",
        needs_base=True,
        random=False,
        params={"t": _NONNEGATIVE.with_default(None)},
        min_inputs=1,
        max_inputs=1,
    ),
    MergeMethod("arcee_fusion", needs_base=True, random=False, params={}, max_inputs=1),
    MergeMethod(
        "ram", needs_base=True, random=False, params={"epsilon": _NONNEGATIVE.with_default(1e-5)}
    ),
    MergeMethod(
        "ramplus_tl",
        needs_base=True,
        random=False,
        params={
            "r": _NONNEGATIVE.with_default(0.1),
            "alpha": _NONNEGATIVE.with_default(0.2),
            "epsilon": _NONNEGATIVE.with_default(1e-5),
        },
    ),
    # one model's tensors, optionally scaled: the building block of stacked slices
    MergeMethod(
        "passthrough",
        needs_base=False,
        random=False,
        params={"scale": ParamSpec(1.0, per_model=True)},
        max_inputs=1,
    ),
):
    METHODS.add(_method.name, _method)
