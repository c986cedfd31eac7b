"""Architecture knowledge as data: one table of name patterns per model family.

A stored tensor name is first matched against the family's *scopes* (stored prefix ->
canonical prefix, e.g. ``model.language_model.`` -> ``model.``), then the rest of the
name is matched (``re.fullmatch``) against the scope's *rules*, in order. A rule gives
the component, optionally a canonical template (``str.format`` over the named groups
``layer`` / ``expert``), the projection and whether the tensor stacks every expert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from darwinmerge.arch.roles import COMPONENTS, PROJECTIONS

__all__ = [
    "Rule",
    "Scope",
    "FamilySpec",
    "FAMILY_SPECS",
    "MODEL_TYPE_TO_FAMILY",
    "SUPPORTED_FAMILIES",
]


@dataclass(frozen=True)
class Rule:
    """One name pattern (relative to its scope) and what a match means."""

    pattern: re.Pattern[str]
    component: str
    canonical: str | None = None  # template over the match groups; None: the name itself
    proj: str | None = None  # fixed projection; else the ``proj`` group, if any
    fused: bool = False  # the tensor stacks all experts on axis 0


def rule(
    pattern: str,
    component: str,
    canonical: str | None = None,
    *,
    proj: str | None = None,
    fused: bool = False,
) -> Rule:
    if component not in COMPONENTS:
        raise ValueError(f"rule {pattern!r}: unknown component {component!r}")
    if proj is not None and proj not in PROJECTIONS:
        raise ValueError(f"rule {pattern!r}: unknown projection {proj!r}")
    return Rule(re.compile(pattern), component, canonical, proj, fused)


@dataclass(frozen=True)
class Scope:
    """A stored-name prefix, the canonical prefix it becomes, and the rules below it.

    ``rules=None`` puts every tensor under the prefix into ``component``. A non-None
    ``component`` overrides the rules' components (MTP); ``keep_layer=False`` drops
    the layer index (the MTP layers are not decoder layers of the model).
    """

    stored: str
    canonical: str
    rules: tuple[Rule, ...] | None
    component: str | None = None
    keep_layer: bool = True


@dataclass(frozen=True)
class FamilySpec:
    """Everything the library knows about one family."""

    family: str
    model_types: tuple[str, ...]  # config ``model_type`` values of this family
    scopes: tuple[Scope, ...]  # tried in order; the first prefix that matches wins
    experts_keys: tuple[str, ...]  # config keys of the expert count, first present wins (): dense
    expert_size_keys: tuple[str, ...]  # config keys of the expert intermediate size


_L = r"layers\.(?P<layer>\d+)\."
_PROJ = r"(?P<proj>gate|up|down)_proj"

_DECODER: tuple[Rule, ...] = (
    rule(r"embed_tokens\.weight", "embed"),
    rule(r"norm\.weight", "final_norm"),
    rule(_L + r"(input_layernorm|post_attention_layernorm)\.weight", "norm"),
    rule(_L + r"self_attn\..+", "attn"),
)
_DENSE_MLP: tuple[Rule, ...] = (rule(_L + r"mlp\." + _PROJ + r"\.weight", "dense_mlp"),)
_FUSED_EXPERTS: tuple[Rule, ...] = (
    rule(_L + r"mlp\.gate\.weight", "router"),
    rule(_L + r"mlp\.experts\.gate_up_proj", "experts", proj="gate_up", fused=True),
    rule(_L + r"mlp\.experts\.down_proj", "experts", proj="down", fused=True),
)
_QWEN_EXPERTS: tuple[Rule, ...] = _FUSED_EXPERTS + (
    rule(_L + r"mlp\.experts\.(?P<expert>\d+)\." + _PROJ + r"\.weight", "experts"),
)
_SHARED_EXPERT: tuple[Rule, ...] = (
    rule(_L + r"mlp\.shared_expert\." + _PROJ + r"\.weight", "shared_expert"),
    rule(_L + r"mlp\.shared_expert_gate\.weight", "shared_expert_gate"),
)
_MIXTRAL_EXPERTS: tuple[Rule, ...] = _FUSED_EXPERTS + (
    rule(_L + r"block_sparse_moe\.gate\.weight", "router", "layers.{layer}.mlp.gate.weight"),
    *(
        rule(
            _L + rf"block_sparse_moe\.experts\.(?P<expert>\d+)\.{w}\.weight",
            "experts",
            "layers.{layer}.mlp.experts.{expert}." + p + "_proj.weight",
            proj=p,
        )
        for w, p in (("w1", "gate"), ("w3", "up"), ("w2", "down"))
    ),
)
_LINEAR_ATTN: tuple[Rule, ...] = (rule(_L + r"linear_attn\..+", "linear_attn"),)
_MTP_HEAD: tuple[Rule, ...] = (
    rule(r"(fc|norm|pre_fc_norm_embedding|pre_fc_norm_hidden)\.weight", "mtp"),
)
_ROOT: tuple[Rule, ...] = (rule(r"lm_head\.weight", "lm_head"),)


def _text_scopes(body: tuple[Rule, ...]) -> tuple[Scope, ...]:
    return (Scope("model.", "model.", body), Scope("", "", _ROOT))


# Transformers 5 writes ``num_local_experts`` for qwen3_moe; published configs say ``num_experts``.
_EXPERT_COUNT = ("num_experts", "num_local_experts")

_QWEN3_5_BODY = _DECODER + _LINEAR_ATTN + _QWEN_EXPERTS + _SHARED_EXPERT + _DENSE_MLP

FAMILY_SPECS: dict[str, FamilySpec] = {
    spec.family: spec
    for spec in (
        FamilySpec(
            "qwen3_5_moe",
            ("qwen3_5_moe", "qwen3_5_moe_text"),
            (
                Scope("model.visual.", "model.visual.", None, component="vision"),
                Scope("model.language_model.", "model.", _QWEN3_5_BODY),
                Scope("model.", "model.", _QWEN3_5_BODY),
                Scope("mtp.", "mtp.", _MTP_HEAD + _QWEN3_5_BODY, component="mtp", keep_layer=False),
                Scope("", "", _ROOT),
            ),
            _EXPERT_COUNT,
            ("moe_intermediate_size",),
        ),
        FamilySpec(
            "qwen3_moe",
            ("qwen3_moe",),
            _text_scopes(_DECODER + _QWEN_EXPERTS + _DENSE_MLP),
            _EXPERT_COUNT,
            ("moe_intermediate_size",),
        ),
        FamilySpec(
            "qwen2_moe",
            ("qwen2_moe",),
            _text_scopes(_DECODER + _QWEN_EXPERTS + _SHARED_EXPERT + _DENSE_MLP),
            _EXPERT_COUNT,
            ("moe_intermediate_size",),
        ),
        FamilySpec(
            "mixtral",
            ("mixtral",),
            _text_scopes(_DECODER + _MIXTRAL_EXPERTS),
            _EXPERT_COUNT,
            ("intermediate_size",),
        ),
        *(
            FamilySpec(name, (name,), _text_scopes(_DECODER + _DENSE_MLP), (), ())
            for name in ("llama", "mistral", "qwen2", "qwen3")
        ),
    )
}

MODEL_TYPE_TO_FAMILY: dict[str, str] = {
    model_type: spec.family for spec in FAMILY_SPECS.values() for model_type in spec.model_types
}
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(FAMILY_SPECS)
