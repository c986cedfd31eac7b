"""Hand-made merge recipes for the zoo's father and mother, as data.

A :class:`HandRecipe` gives the mother's share ``t`` per (layer range x component
group); every tensor of the child is ``(1 - t) * father + t * mother`` (a linear merge
with weights ``1 - t`` and ``t``; since the mother is the father fine-tuned, this is
also task arithmetic ``father + t * (mother - father)`` with the father as base).
Tensors that no entry names take ``default``.

Component groups are the merge engine's names (``darwinmerge.merge.recipe``):
``attention`` (full and linear attention), ``mlp`` (routed experts, shared expert and
its gate), ``router``, ``norm`` (the two layer norms), ``embed``, ``lm_head``,
``final_norm``.

:func:`to_recipe` turns one into a :class:`darwinmerge.merge.Recipe` for the engine;
:func:`mother_share` answers ``t`` for one tensor name (for in-memory checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "HandRecipe", "RECIPES", "WINNING", "to_recipe", "mother_share"]


@dataclass(frozen=True)
class Entry:
    """``t`` for ``component`` in layers ``first..last`` (inclusive; None = non-layer)."""

    component: str
    t: float
    layers: tuple[int, int] | None = None


@dataclass(frozen=True)
class HandRecipe:
    name: str
    description: str
    entries: tuple[Entry, ...]
    default: float

    def rules(self) -> list[dict[str, Any]]:
        """The mother's weight schedule in the engine's rule syntax (first match wins)."""
        out: list[dict[str, Any]] = []
        for e in self.entries:
            rule: dict[str, Any] = {"component": e.component, "value": e.t}
            if e.layers is not None:
                rule["layers"] = list(e.layers)
            out.append(rule)
        out.append({"value": self.default})
        return out


_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("self_attn.", "linear_attn."),
    "mlp": ("mlp.experts", "mlp.shared_expert"),
    "router": ("mlp.gate.",),
    "norm": ("input_layernorm", "post_attention_layernorm"),
    "embed": ("embed_tokens",),
    "lm_head": ("lm_head",),
    "final_norm": ("model.norm.",),
}


def mother_share(recipe: HandRecipe, tensor_name: str) -> float:
    """``t`` of one tensor of a Transformers ``Qwen3_5MoeForCausalLM`` state dict."""
    layer: int | None = None
    if ".layers." in tensor_name:
        layer = int(tensor_name.split(".layers.")[1].split(".")[0])
    for e in recipe.entries:
        if not any(key in tensor_name for key in _GROUPS[e.component]):
            continue
        if e.layers is not None and (layer is None or not e.layers[0] <= layer <= e.layers[1]):
            continue
        return e.t
    return recipe.default


def to_recipe(recipe: HandRecipe, father: str | Path, mother: str | Path) -> Any:
    """A :class:`darwinmerge.merge.Recipe` (method ``linear``, weights ``1 - t`` / ``t``)."""
    from darwinmerge.merge import Recipe

    mother_rules = recipe.rules()
    father_rules = [{**r, "value": 1.0 - float(r["value"])} for r in mother_rules]
    return Recipe.parse(
        {
            "method": "linear",
            "parents": [
                {"name": "father", "path": str(father), "parameters": {"weight": father_rules}},
                {"name": "mother", "path": str(mother), "parameters": {"weight": mother_rules}},
            ],
            "parameters": {"normalize": False},
            "donor": "father",
        },
        source=f"zoo recipe {recipe.name}",
    )


UNIFORM_HALF = HandRecipe(
    name="uniform-0.5",
    description="every tensor half father, half mother (the plain linear merge)",
    entries=(),
    default=0.5,
)

# Chosen on the fitness split from the grid t_moe in {0.5, 0.7, 0.85, 1.0} x t_rest in
# {0, 0.3} (docs/zoo.md, "Winnability"); reported on the test split.
WINNING = HandRecipe(
    name="moe-from-mother",
    description=(
        "the MoE blocks (routed experts, shared expert + gate, router) of every layer "
        "70% mother / 30% father; attention, norms, embeddings and the output head "
        "from the father"
    ),
    entries=(Entry("mlp", 0.7), Entry("router", 0.7)),
    default=0.0,
)

RECIPES: dict[str, HandRecipe] = {r.name: r for r in (UNIFORM_HALF, WINNING)}
