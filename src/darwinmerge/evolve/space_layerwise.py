"""The ``layerwise`` space: B's share ``t`` per layer and component group.

Groups: ``attention`` (attn, linear_attn), ``experts`` (routed experts, dense MLP),
``shared`` (shared expert + its gate), ``router``, ``norms`` (the layer norms); plus one
gene ``non_layer`` for everything outside the layers (embeddings, final norm, head, MTP).

With ``control_points: K`` each group has genes ``<group>_0 .. <group>_{K-1}`` at K
anchors spread evenly over the depth; layer ``l`` of ``L`` reads the piecewise-linear
interpolation at position ``l / (L - 1)`` (the recipe's gradient schedule, so the
decoded recipe holds the K anchors, not L values). Without it ``K = L``: one gene per
layer (the anchors fall exactly on the layers). Method ``trimmed_lerp`` with densities 1
(= lerp) unless ``densities: true`` adds ``density_a`` / ``density_b`` genes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.genes import Gene, GeneValue, GenomeSpace, SpaceContext, genome_space
from darwinmerge.merge.recipe import Recipe

__all__ = ["LAYERWISE_GROUPS", "LayerwiseSpace", "LayerwiseSpaceConfig"]

#: group -> recipe component names
LAYERWISE_GROUPS: dict[str, list[str]] = {
    "attention": ["attention"],
    "experts": ["experts", "dense_mlp"],
    "shared": ["shared_expert", "shared_expert_gate"],
    "router": ["router"],
    "norms": ["norm"],
}


class LayerwiseSpaceConfig(BaseModel):
    """Options of the ``layerwise`` space."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["layerwise"] = "layerwise"
    control_points: int | None = Field(None, ge=1)
    densities: bool = False
    density_low: float = Field(0.5, gt=0.0, le=1.0)
    use_base: bool = False


class LayerwiseSpace(GenomeSpace):
    name = "layerwise"

    def __init__(self, config: LayerwiseSpaceConfig, ctx: SpaceContext) -> None:
        self.a, self.b = ctx.require_pair(self.name)
        self.config = config
        L = ctx.num_layers
        k = config.control_points or L
        if k > L:
            raise ConfigError(f"space layerwise: control_points={k} exceeds the {L} layers")
        if config.use_base and ctx.base_path is None:
            raise ConfigError("space layerwise: use_base needs a base model in the context")
        self.points = k
        genes = [
            Gene(f"{group}_{i}", doc=f"B's share of {group} at anchor {i} of {k}")
            for group in LAYERWISE_GROUPS
            for i in range(k)
        ]
        genes.append(Gene("non_layer", doc="B's share outside the layers"))
        if config.densities:
            dl = config.density_low
            genes += [Gene("density_a", dl, 1.0), Gene("density_b", dl, 1.0)]
        super().__init__(genes, ctx)

    def anchor_positions(self) -> list[float]:
        """Layer position (0 .. L-1, fractional) of each anchor."""
        L, k = self.ctx.num_layers, self.points
        return [0.0] if k == 1 else [i * (L - 1) / (k - 1) for i in range(k)]

    def recipe_from(self, values: Mapping[str, GeneValue]) -> Recipe:
        rules: list[dict[str, Any]] = []
        for group, comps in LAYERWISE_GROUPS.items():
            anchors = [float(values[f"{group}_{i}"]) for i in range(self.points)]
            rules.append(
                {
                    "component": comps,
                    "layers": [0, self.ctx.num_layers - 1],
                    "value": anchors if len(anchors) > 1 else anchors[0],
                }
            )
        rules.append({"value": float(values["non_layer"])})
        da = float(values.get("density_a", 1.0))
        db = float(values.get("density_b", 1.0))
        data: dict[str, Any] = {
            "parents": [
                {"name": self.a, "path": self.ctx.parent_paths[0], "parameters": {"density": da}},
                {"name": self.b, "path": self.ctx.parent_paths[1], "parameters": {"density": db}},
            ],
            "method": "trimmed_task_lerp" if self.config.use_base else "trimmed_lerp",
            "parameters": {"t": rules},
        }
        if self.config.use_base:
            data["base"] = self.ctx.base_path
        return self._parse(data)


@genome_space(
    "layerwise", config=LayerwiseSpaceConfig, prior="darwinmerge.evolve.prior_rules:layerwise_prior"
)
def _build_layerwise(config: LayerwiseSpaceConfig, ctx: SpaceContext) -> GenomeSpace:
    return LayerwiseSpace(config, ctx)
