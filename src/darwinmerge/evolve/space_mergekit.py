"""The ``mergekit_evolve`` space: mergekit-evolve's genome layout on the unit cube.

mergekit-evolve's genotype is an array ``[layer groups, models, parameter sets,
method parameters]`` (C order when flattened): ``L / layer_granularity`` layer groups
(one group when the granularity is 0), one parameter set per ``filters`` entry plus a
default set, and the method's parameters (``weight``; ``weight, density`` for the
TIES/DARE family; ``t`` for slerp). This space keeps that layout and gene order; only
the range differs (our genes live in [0, 1]):

* ``weight`` = ``u * max_weight``, or ``(2u - 1) * max_weight`` with
  ``allow_negative_weights`` (mergekit takes ``|x|`` unless negative weights are allowed);
  with ``normalize`` the range starts at ``1e-3 * max_weight`` instead of 0, so the
  normalising sum of a layer group's weights is never 0 (mergekit-evolve fails there);
* ``density`` = ``density_low + u (1 - density_low)`` (mergekit clamps ``|x|`` to [0, 1];
  the engine needs density > 0);
* slerp (two models): per layer group, mergekit slerps from the heavier model towards
  the other with ``t = softmax(top two weights)[1]``; by slerp's symmetry that is
  ``t = sigmoid(w_B - w_A)`` from A to B, whichever is heavier.

The decoded mergekit configuration (``slices`` per layer group, or one gradient per
model with ``smooth``; ``filter`` rules per parameter set; ``normalize``) is the one
mergekit-evolve writes, imported with :func:`darwinmerge.merge.recipe_from_mergekit`
(which reads embeddings with the first slice and the norm / head with the last, as
mergekit does). Not carried over: ``dtype: bfloat16`` (the child keeps the donor's
dtypes), ``int8_mask`` (no effect on the result), ``tokenizer_source``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.genes import Gene, GeneValue, GenomeSpace, SpaceContext, genome_space
from darwinmerge.merge.mergekit_io import recipe_from_mergekit
from darwinmerge.merge.recipe import Recipe

if TYPE_CHECKING:  # numpy loads when a genome is decoded, not when a config is checked
    import numpy as np

__all__ = ["MERGEKIT_PARAMS", "MergekitEvolveSpace", "MergekitEvolveSpaceConfig"]

#: method -> its genotype parameters, in mergekit-evolve's order (weight first)
MERGEKIT_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("weight",),
    "task_arithmetic": ("weight",),
    "ties": ("weight", "density"),
    "dare_ties": ("weight", "density"),
    "dare_linear": ("weight", "density"),
    "breadcrumbs": ("weight", "density"),
    "breadcrumbs_ties": ("weight", "density"),
    "slerp": ("t",),
}
#: with normalize, weights start at this fraction of max_weight (a zero sum cannot be divided)
WEIGHT_FLOOR = 1e-3
_NEEDS_BASE = {"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
               "breadcrumbs_ties"}  # fmt: skip


class MergekitEvolveSpaceConfig(BaseModel):
    """mergekit-evolve's ``genome:`` keys (docs/evolve.md says which are supported)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mergekit_evolve"] = "mergekit_evolve"
    merge_method: Literal[
        "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
        "breadcrumbs_ties", "slerp",
    ] = "linear"  # fmt: skip
    models: tuple[str, ...] | None = None
    base_model: str | None = None
    layer_granularity: int = Field(0, ge=0)
    normalize: bool | None = None
    allow_negative_weights: bool = False
    filters: tuple[str, ...] = ()
    smooth: bool = False
    max_weight: float = Field(1.0, gt=0.0)
    density_low: float = Field(0.01, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _rules(self) -> MergekitEvolveSpaceConfig:
        problems = []
        if self.merge_method == "slerp" and (self.smooth or self.filters):
            problems.append("slerp supports neither smooth nor filters (as in mergekit-evolve)")
        if self.merge_method == "linear" and self.base_model is not None:
            problems.append("linear takes no base_model")
        normalize = self.normalize
        if normalize is None:
            normalize = self.merge_method in ("ties", "dare_ties", "linear")
        if self.allow_negative_weights and normalize and self.merge_method != "slerp":
            problems.append(
                "allow_negative_weights with normalize divides by weight sums that can be 0; "
                "set normalize: false"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class MergekitEvolveSpace(GenomeSpace):
    name = "mergekit_evolve"

    def __init__(self, config: MergekitEvolveSpaceConfig, ctx: SpaceContext) -> None:
        self.config = config
        names, paths = list(ctx.parent_names), list(ctx.parent_paths)
        if config.models is not None:
            lookup = {
                **dict(zip(names, names, strict=True)),
                **dict(zip(paths, names, strict=True)),
            }
            unknown = [m for m in config.models if m not in lookup]
            chosen = [lookup[m] for m in config.models if m in lookup]
            if unknown or sorted(chosen) != sorted(names):
                raise ConfigError(
                    f"space mergekit_evolve: models {list(config.models)} must name every "
                    f"parent once (by name or path: {', '.join(names)})"
                )
            names = chosen
            paths = [ctx.parent_paths[ctx.parent_names.index(n)] for n in names]
        self.models, self.paths = names, paths
        method = config.merge_method
        if method in _NEEDS_BASE:
            if ctx.base_path is None:
                raise ConfigError(f"space mergekit_evolve: {method} needs a base model")
            if config.base_model not in (None, "base", ctx.base_path):
                raise ConfigError(
                    f"space mergekit_evolve: base_model {config.base_model!r} is not the "
                    f"run's base ({ctx.base_path})"
                )
        if method == "slerp" and len(names) != 2:
            raise ConfigError("space mergekit_evolve: slerp merges exactly two models")
        L, g = ctx.num_layers, config.layer_granularity
        if g > 0 and L % g:
            raise ConfigError(
                f"space mergekit_evolve: {L} layers are not a multiple of layer_granularity={g}"
            )
        self.groups = L // g if g > 0 else 1
        self.step = g if g > 0 else L
        self.sets: list[str | None] = [*config.filters, None]
        self.params = MERGEKIT_PARAMS[method]
        normalize = config.normalize
        if normalize is None:
            normalize = method in ("ties", "dare_ties", "linear")
        self.normalize = normalize and method != "slerp"
        genes = []
        for gi in range(self.groups):
            for m in names:
                for filt in self.sets:
                    for p in self.params:
                        suffix = f"[{filt}]" if filt is not None else ""
                        if p == "density":
                            genes.append(Gene(f"{m}.{p}{suffix}@{gi}", config.density_low, 1.0))
                        elif config.allow_negative_weights:
                            w = config.max_weight
                            genes.append(Gene(f"{m}.{p}{suffix}@{gi}", -w, w))
                        else:
                            low = WEIGHT_FLOOR * config.max_weight if self.normalize else 0.0
                            genes.append(Gene(f"{m}.{p}{suffix}@{gi}", low, config.max_weight))
        super().__init__(genes, ctx)

    def genotype(self, values: Mapping[str, GeneValue]) -> np.ndarray:
        """The decoded values as mergekit's ``[groups, models, sets, params]`` array."""
        import numpy as np

        flat = np.array([float(values[g.name]) for g in self.genes])
        return flat.reshape(self.groups, len(self.models), len(self.sets), len(self.params))

    def blind_mean(self) -> np.ndarray:
        """mergekit-evolve's initial genotype: weight 1 / #models, density 1."""
        vals: dict[str, GeneValue] = {}
        for g in self.genes:
            if ".density" in g.name:
                vals[g.name] = 1.0
            else:
                vals[g.name] = min(1.0 / len(self.models), g.high)
        return self.encode(vals)

    def _param_setting(self, arr: np.ndarray, m: int, p: int, group: int | None) -> Any:
        """mergekit's parameter value: a scalar, a gradient, or {filter, value} rules."""
        values = []
        for s, filt in enumerate(self.sets):
            col = arr[:, m, s, p] if group is None else arr[group, m, s, p : p + 1]
            v: Any = [float(x) for x in col] if len(col) > 1 else float(col[0])
            values.append((filt, v))
        if len(self.sets) == 1:
            return values[0][1]
        return [{"filter": f, "value": v} if f is not None else {"value": v} for f, v in values]

    def mergekit_config(self, values: Mapping[str, GeneValue]) -> dict[str, Any]:
        """The mergekit configuration mergekit-evolve would write for these genes."""
        cfg, arr = self.config, self.genotype(values)
        method = cfg.merge_method
        base = self.ctx.base_path if method in _NEEDS_BASE else None
        out: dict[str, Any] = {"merge_method": method}

        def rng(gi: int) -> list[int]:
            return [gi * self.step, (gi + 1) * self.step]

        if method == "slerp":
            a, b = self.paths
            out["base_model"] = a
            out["slices"] = [
                {
                    "sources": [
                        {"model": a, "layer_range": rng(gi)},
                        {"model": b, "layer_range": rng(gi)},
                    ],
                    "parameters": {"t": _sigmoid(float(arr[gi, 1, 0, 0] - arr[gi, 0, 0, 0]))},
                }
                for gi in range(self.groups)
            ]
            return out
        out["parameters"] = {"normalize": self.normalize}
        if base is not None:
            out["base_model"] = base
        if cfg.smooth:
            out["models"] = [
                {
                    "model": path,
                    "parameters": {
                        p: self._param_setting(arr, m, i, None) for i, p in enumerate(self.params)
                    },
                }
                for m, path in enumerate(self.paths)
            ]
            return out
        slices = []
        for gi in range(self.groups):
            sources: list[dict[str, Any]] = [
                {
                    "model": path,
                    "layer_range": rng(gi),
                    "parameters": {
                        p: self._param_setting(arr, m, i, gi) for i, p in enumerate(self.params)
                    },
                }
                for m, path in enumerate(self.paths)
            ]
            if base is not None:
                sources.append({"model": base, "layer_range": rng(gi)})
            slices.append({"sources": sources})
        out["slices"] = slices
        return out

    def recipe_from(self, values: Mapping[str, GeneValue]) -> Recipe:
        imported = recipe_from_mergekit(self.mergekit_config(values), source="mergekit_evolve")
        by_path = dict(zip(self.ctx.parent_paths, self.ctx.parent_names, strict=True))
        data = imported.model_dump(mode="json", exclude_defaults=True)
        for parent in data["parents"]:
            parent["name"] = by_path[parent["path"]]
        return self._parse(data)


@genome_space(
    "mergekit_evolve",
    config=MergekitEvolveSpaceConfig,
    prior="darwinmerge.evolve.prior_rules:mergekit_prior",
)
def _build_mergekit(config: MergekitEvolveSpaceConfig, ctx: SpaceContext) -> GenomeSpace:
    return MergekitEvolveSpace(config, ctx)
