"""Architecture knowledge as data: one table per model family.

Each :class:`FamilySpec` holds the family's stored-tensor name patterns, the config
fields of its expert count and top-k, which decoder layers are sparse, and where the
live modules sit in a loaded model (:class:`ModulePaths`, read by the MRI hooks).

A stored tensor name is first matched against the family's *scopes* (stored prefix ->
canonical prefix, e.g. ``model.language_model.`` -> ``model.``), then the rest of the
name is matched (``re.fullmatch``) against the scope's *rules*, in order. A rule gives
the component, optionally a canonical template (``str.format`` over the named groups
``layer`` / ``expert``), the projection and whether the tensor stacks every expert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from darwinmerge.arch.roles import COMPONENTS, PROJECTIONS

__all__ = [
    "Rule",
    "Scope",
    "ModulePaths",
    "SPARSE_RULES",
    "FamilySpec",
    "config_value",
    "expert_count",
    "experts_per_token",
    "is_sparse_layer",
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
class ModulePaths:
    """Dotted module paths in a loaded ``*ForCausalLM`` (what the MRI hooks). ``layers`` /
    ``norm`` are alternatives tried in order (text-only vs multimodal wrapper); ``router``
    and ``experts`` are relative to one decoder layer (None: dense family)."""

    layers: tuple[str, ...] = ("model.layers", "model.language_model.layers")
    norm: tuple[str, ...] = ("model.norm", "model.language_model.norm")
    lm_head: str = "lm_head"
    router: str | None = None
    experts: str | None = None


#: Which decoder layers carry a router: ``none`` (dense), ``all``, or ``qwen_step``
#: (Transformers' Qwen2Moe / Qwen3Moe rule: not in ``mlp_only_layers`` and
#: ``(layer + 1) % decoder_sparse_step == 0``).
SPARSE_RULES: tuple[str, ...] = ("none", "all", "qwen_step")

_MOE_MODULES = ModulePaths(router="mlp.gate", experts="mlp.experts")


@dataclass(frozen=True)
class FamilySpec:
    """Everything the library knows about one family."""

    family: str
    model_types: tuple[str, ...]  # config ``model_type`` values of this family
    scopes: tuple[Scope, ...]  # tried in order; the first prefix that matches wins
    experts_keys: tuple[str, ...]  # config keys of the expert count, first present wins (): dense
    expert_size_keys: tuple[str, ...]  # config keys of the expert intermediate size
    top_k_keys: tuple[str, ...] = ()  # config keys of experts per token, first present wins
    sparse_rule: str = "none"  # one of SPARSE_RULES
    modules: ModulePaths = field(default_factory=ModulePaths)

    def __post_init__(self) -> None:
        if self.sparse_rule not in SPARSE_RULES:
            raise ValueError(f"{self.family}: unknown sparse rule {self.sparse_rule!r}")
        if (self.sparse_rule == "none") != (self.modules.router is None):
            raise ValueError(f"{self.family}: a sparse rule needs a router path and vice versa")


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
_TOP_K = ("num_experts_per_tok",)

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
            _TOP_K,
            "all",
            _MOE_MODULES,
        ),
        FamilySpec(
            "qwen3_moe",
            ("qwen3_moe",),
            _text_scopes(_DECODER + _QWEN_EXPERTS + _DENSE_MLP),
            _EXPERT_COUNT,
            ("moe_intermediate_size",),
            _TOP_K,
            "qwen_step",
            _MOE_MODULES,
        ),
        FamilySpec(
            "qwen2_moe",
            ("qwen2_moe",),
            _text_scopes(_DECODER + _QWEN_EXPERTS + _SHARED_EXPERT + _DENSE_MLP),
            _EXPERT_COUNT,
            ("moe_intermediate_size",),
            _TOP_K,
            "qwen_step",
            _MOE_MODULES,
        ),
        FamilySpec(
            "mixtral",
            ("mixtral",),
            _text_scopes(_DECODER + _MIXTRAL_EXPERTS),
            _EXPERT_COUNT,
            ("intermediate_size",),
            _TOP_K,
            "all",
            _MOE_MODULES,
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


def config_value(config: Mapping[str, Any] | Any, keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` present (not None) in a config dict or config object."""
    for key in keys:
        value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
        if value is not None:
            return value
    return None


def expert_count(spec: FamilySpec, config: Mapping[str, Any] | Any) -> int:
    """Experts per sparse layer from a (text) config; 0 for a dense family."""
    return int(config_value(config, spec.experts_keys) or 0) if spec.experts_keys else 0


def experts_per_token(spec: FamilySpec, config: Mapping[str, Any] | Any) -> int:
    """Experts per token from a (text) config; 0 for a dense family or when absent."""
    return int(config_value(config, spec.top_k_keys) or 0) if spec.top_k_keys else 0


def is_sparse_layer(spec: FamilySpec, config: Mapping[str, Any] | Any, layer: int) -> bool:
    """Whether decoder ``layer`` carries a router, by the family's :data:`SPARSE_RULES`."""
    if spec.sparse_rule == "none":
        return False
    if spec.sparse_rule == "all":
        return True
    only = config_value(config, ("mlp_only_layers",)) or []
    step = int(config_value(config, ("decoder_sparse_step",)) or 1)
    return layer not in only and expert_count(spec, config) > 0 and (layer + 1) % step == 0
