"""The ``seed`` space: the Darwin V5 genome of the seed post.

Genes (parents A = first, B = second; ``t`` is B's share):

``ratio``, ``attn``, ``ffn``, ``density_a``, ``density_b``, ``cut_1..cut_{K-1}``,
``t_1..t_K``, ``router_1..router_K`` and (when revival is on) ``revive``.

Decoding (docs/evolve.md, "Codec"): the cuts, sorted, split the layers into up to ``K``
contiguous blocks; in block ``k``

* attention (``attn``, ``linear_attn``): ``t = clip(t_k + attn - 1/2, 0, 1)``
* FFN (routed experts, shared expert + gate, dense MLP, and the router when merged):
  ``t = clip(t_k + ffn - 1/2, 0, 1)``
* everything else in the layers (norms): ``t = t_k``

and every tensor outside the layers (embeddings, final norm, output head, MTP) takes
``t = ratio``. Method ``trimmed_lerp`` (``trimmed_task_lerp`` against the base with
``use_base``) with per-parent ``density``; router source per block; revival of B's dead
experts from A at the decoded utilisation threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.genes import Gene, GeneValue, GenomeSpace, SpaceContext, genome_space
from darwinmerge.merge.recipe import MERGED, Recipe

__all__ = ["SeedSpace", "SeedSpaceConfig", "seed_blocks"]

ATTENTION = ["attention"]
FFN = ["mlp", "router"]


class SeedSpaceConfig(BaseModel):
    """Options of the ``seed`` space."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["seed"] = "seed"
    max_blocks: int = Field(3, ge=1, le=32)
    density_low: float = Field(0.5, gt=0.0, le=1.0)
    use_base: bool = False
    revive: Literal["auto", "on", "off"] = "auto"
    revive_into: str | None = None
    revive_max: float = Field(0.5, gt=0.0, le=1.0)


def seed_blocks(cuts: list[int], num_layers: int) -> list[tuple[int, int, int]]:
    """``(k, first, last)`` of every non-empty block (k 0-based) from the cut positions."""
    edges = [0, *sorted(min(max(c, 0), num_layers) for c in cuts), num_layers]
    return [
        (k, edges[k], edges[k + 1] - 1) for k in range(len(edges) - 1) if edges[k + 1] > edges[k]
    ]


def _clip(v: float) -> float:
    return min(max(v, 0.0), 1.0)


class SeedSpace(GenomeSpace):
    name = "seed"

    def __init__(self, config: SeedSpaceConfig, ctx: SpaceContext) -> None:
        a, b = ctx.require_pair(self.name)
        self.config = config
        self.a, self.b = a, b
        K, L = config.max_blocks, ctx.num_layers
        into = config.revive_into or b
        if into not in (a, b):
            raise ConfigError(f"space seed: revive_into {into!r} is not a parent ({a}, {b})")
        self.into, self.source = into, (a if into == b else b)
        want = config.revive
        if want == "on" and into not in ctx.scans:
            raise ConfigError(
                f"space seed: revive: on needs a saved MRI scan of {into} in the context "
                "(SpaceContext.scans); or set revive: off"
            )
        self.revives = want == "on" or (want == "auto" and into in ctx.scans)
        if config.use_base and ctx.base_path is None:
            raise ConfigError("space seed: use_base needs a base model in the context")
        dl = config.density_low
        genes = [
            Gene("ratio", doc="B's share of the tensors outside the layers"),
            Gene("attn", doc="attention offset: t_attention = t_block + attn - 1/2"),
            Gene("ffn", doc="FFN offset: t_ffn = t_block + ffn - 1/2"),
            Gene("density_a", dl, 1.0, doc="share of |B - A| per expert A moves along"),
            Gene("density_b", dl, 1.0, doc="share of |B - A| per expert B moves along"),
        ]
        genes += [
            Gene(f"cut_{k}", 0, L, "int", doc="a block boundary (layer index)") for k in range(1, K)
        ]
        genes += [Gene(f"t_{k}", doc=f"B's share in block {k}") for k in range(1, K + 1)]
        genes += [
            Gene(f"router_{k}", kind="choice", choices=(a, MERGED, b), doc=f"router of block {k}")
            for k in range(1, K + 1)
        ]
        if self.revives:
            genes.append(
                Gene("revive", 0.0, config.revive_max, doc="dead-expert utilisation threshold")
            )
        super().__init__(genes, ctx)

    def blocks(self, values: Mapping[str, GeneValue]) -> list[tuple[int, int, int]]:
        cuts = [int(values[f"cut_{k}"]) for k in range(1, self.config.max_blocks)]
        return seed_blocks(cuts, self.ctx.num_layers)

    def recipe_from(self, values: Mapping[str, GeneValue]) -> Recipe:
        v = dict(values)
        attn, ffn, ratio = float(v["attn"]), float(v["ffn"]), float(v["ratio"])
        rules: list[dict[str, Any]] = []
        router: list[dict[str, Any]] = []
        for k, first, last in self.blocks(v):
            tk = float(v[f"t_{k + 1}"])
            span = [first, last]
            rules.append({"component": ATTENTION, "layers": span, "value": _clip(tk + attn - 0.5)})
            rules.append({"component": FFN, "layers": span, "value": _clip(tk + ffn - 0.5)})
            rules.append({"layers": span, "value": tk})
            router.append({"layers": span, "source": str(v[f"router_{k + 1}"])})
        rules.append({"value": ratio})
        data: dict[str, Any] = {
            "parents": [
                {
                    "name": self.a,
                    "path": self.ctx.parent_paths[0],
                    "parameters": {"density": float(v["density_a"])},
                },
                {
                    "name": self.b,
                    "path": self.ctx.parent_paths[1],
                    "parameters": {"density": float(v["density_b"])},
                },
            ],  # fmt: skip
            "method": "trimmed_task_lerp" if self.config.use_base else "trimmed_lerp",
            "parameters": {"t": rules},
            "router": MERGED if all(r["source"] == MERGED for r in router) else router,
        }
        if self.config.use_base:
            data["base"] = self.ctx.base_path
        threshold = float(v.get("revive", 0.0))
        if self.revives and threshold > 0:
            revive: dict[str, Any] = {
                "source": self.source,
                "into": self.into,
                "scan": self.ctx.scans[self.into],
                "threshold": threshold,
            }
            if self.source in self.ctx.scans:
                revive["donor_scan"] = self.ctx.scans[self.source]
            data["revive"] = revive
        return self._parse(data)

    def summary(self, values: Mapping[str, GeneValue]) -> dict[str, float | str]:
        parts = []
        for k, first, last in self.blocks(values):
            span = f"L{first}" if first == last else f"L{first}-{last}"
            t = float(values[f"t_{k + 1}"])
            parts.append(f"{span} t={t:.4f} router {values[f'router_{k + 1}']}")
        return {"blocks": "; ".join(parts)}


@genome_space("seed", config=SeedSpaceConfig, prior="darwinmerge.evolve.prior_rules:seed_prior")
def _build_seed(config: SeedSpaceConfig, ctx: SpaceContext) -> GenomeSpace:
    return SeedSpace(config, ctx)
